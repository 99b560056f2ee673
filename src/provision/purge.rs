//! (issue 15: built by the provisioning branch)
