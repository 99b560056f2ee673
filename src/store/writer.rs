//! The single writer thread (group commit).
