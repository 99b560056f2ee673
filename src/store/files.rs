//! Message files in partitions.
