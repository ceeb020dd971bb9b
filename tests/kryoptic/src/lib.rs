//! Nothing: the crate exists so that cargo builds the `kryoptic` dependency's cdylib.
