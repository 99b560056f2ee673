//! End-to-end mmp tests.
