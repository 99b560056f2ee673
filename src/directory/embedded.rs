//! The embedded directory: a JSON file under the data folder.
use super::*;
use std::path::PathBuf;

#[derive(Clone)]
pub struct Embedded {}

impl Embedded {
    pub fn open(_path: PathBuf) -> anyhow::Result<Embedded> {
        todo!()
    }
    pub fn is_local_domain(&self, _domain: &str) -> Result<bool, DirError> {
        todo!()
    }
    pub fn lookup(&self, _address: &str) -> Result<Option<Recipient>, DirError> {
        todo!()
    }
    pub fn authenticate(&self, _login: &str, _password: &str) -> Result<AuthResult, DirError> {
        todo!()
    }
}
