//! Placeholder: being written.

pub async fn serve(
    _conn: crate::net::Conn,
    _info: crate::net::ConnInfo,
    _services: crate::services::Services,
) {
}
