//! `Core/echo` (RFC 8620 4): answers its arguments unchanged.

use serde_json::{Map, Value};

use super::{Ctx, MethodError};

pub async fn echo(_ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    Ok(Value::Object(args))
}
