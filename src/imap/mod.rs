//! Placeholder: being written.

pub mod mime;
pub mod search;

pub async fn serve(
    _conn: crate::net::Conn,
    _info: crate::net::ConnInfo,
    _services: crate::services::Services,
) {
}
