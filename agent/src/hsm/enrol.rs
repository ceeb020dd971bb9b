//! Putting keys on the token: PKCS#12 import and in-HSM generation with a
//! self-signed certificate, and removing a pair again.
