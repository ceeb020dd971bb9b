//! A P-256 signature, made on the requesting I/O thread, that hangs: that
//! request and every other still get their answer at the deadline.
//!
//! A target of its own because cargo runs test targets one after another:
//! a key counts as quick only after a signature under 200 µs, which a debug
//! build on two busy cores may never make while other tests load them.

use integration_tests::hanging::hang_and_resume;

#[test]
fn a_quick_signature_that_hangs_gets_503_at_the_deadline_and_service_resumes() {
    hang_and_resume("p256");
}
