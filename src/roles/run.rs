//! Binding listeners and running roles.
