//! The HTTP/JSON admin API: every admin RPC as `POST /v1/admin/<Method>` on the HTTP port,
//! with the request and response messages in the proto3 JSON mapping, and the OpenAPI 3.1
//! document of it at `GET /openapi.json`.
//!
//! **One implementation.** A call is decoded from JSON into the RPC's prost message and
//! handed to the same [`AdminService`] trait method the gRPC server calls, with the
//! caller's `Authorization: Bearer <token>` header as the request's metadata: tokens,
//! tenant scoping, validation and every side effect (policy pushes, audit records) are
//! the gRPC ones. As on gRPC, the token is checked before the body is read.
//!
//! **JSON.** Field names are the .proto names (`amount_micro`; the lowerCamelCase JSON
//! names are accepted too), unknown fields are refused, enums are their names
//! (`"GRANT_KIND_PURCHASED"`; numbers are accepted), `bytes` are base64 and 64-bit integers
//! are JSON numbers (exact in any JSON parser that keeps integers; JavaScript's `Number`
//! is exact up to 2^53 micro-credits, about 9 billion credits). Responses carry every
//! field, zero values included. An empty body is the empty message.
//!
//! **Errors** have one shape, whatever failed (token, scope, JSON, validation, store):
//!
//! ```json
//! {"error": {"code": "permission_denied", "grpc_code": 7, "message": "..."}}
//! ```
//!
//! `code` is the gRPC status name in snake case; the HTTP status follows it
//! ([`http_status`]): `invalid_argument` 400, `unauthenticated` 401 (with
//! `WWW-Authenticate: Bearer`), `permission_denied` 403, `not_found` 404 (also an unknown
//! method), `already_exists`/`aborted` 409, `failed_precondition` 412, `out_of_range` 400,
//! `resource_exhausted` 429 (and 413 for a body over 4 MiB), `unimplemented` 501,
//! `unavailable` 503, `deadline_exceeded` 504, anything else 500.
//!
//! **OpenAPI.** The document is written at start-up from the compiled descriptors
//! ([`tollgate_proto::FILE_DESCRIPTOR_SET`], with the .proto comments as descriptions): one
//! path per RPC of `tollgate.v1.AdminService`, one schema per message and enum. A test
//! checks that every RPC of the descriptor is routed ([`ADMIN_RPCS`]), so neither the
//! routes nor the document can drift from the .proto files.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    SerializeOptions, ServiceDescriptor,
};
use serde_json::{Map, Value, json};
use tollgate_proto::v1::admin_service_server::AdminService;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::admin_svc::AdminSvc;
use crate::state::State;

/// The admin service's full protobuf name.
pub const ADMIN_SERVICE: &str = "tollgate.v1.AdminService";
/// Largest request body accepted (as the gRPC admin service's largest message,
/// `server::ADMIN_MAX_MESSAGE_BYTES`; not imported from there: `server` imports this).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The HTTP status for a gRPC status code (the usual google.rpc mapping).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The snake-case name of a gRPC status code (the error shape's `code`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The error shape for `status`, with its HTTP status.
pub fn error_response(status: &Status) -> HttpResponse {
    error_with(http_status(status.code()), status)
}

fn error_with(http: StatusCode, status: &Status) -> HttpResponse {
    let body = json!({"error": {
        "code": code_name(status.code()),
        "grpc_code": status.code() as i32,
        "message": status.message(),
    }});
    let mut resp = (
        http,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if status.code() == Code::Unauthenticated {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn json_response(body: Vec<u8>) -> HttpResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Decodes `body` as `Req`, calls `f` with `md` as its metadata, encodes the reply.
async fn unary<Req, Resp, F, Fut>(md: MetadataMap, body: Vec<u8>, f: F) -> Result<Vec<u8>, Status>
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    // The bytes come from a DynamicMessage of the RPC's own input descriptor.
    let msg = Req::decode(body.as_slice())
        .map_err(|e| Status::invalid_argument(format!("request does not decode: {e}")))?;
    let mut req = Request::new(msg);
    *req.metadata_mut() = md;
    Ok(f(req).await?.into_inner().encode_to_vec())
}

macro_rules! admin_rpcs {
    ($($name:literal => $method:ident),* $(,)?) => {
        /// Every admin RPC the HTTP API routes (a test checks it against the descriptor).
        pub const ADMIN_RPCS: &[&str] = &[$($name),*];

        /// Calls RPC `name` (None: no such RPC).
        async fn dispatch(
            svc: &AdminSvc,
            name: &str,
            md: MetadataMap,
            body: Vec<u8>,
        ) -> Option<Result<Vec<u8>, Status>> {
            match name {
                $($name => Some(unary(md, body, |r| svc.$method(r)).await),)*
                _ => None,
            }
        }
    };
}

admin_rpcs! {
    "CreateTenant" => create_tenant,
    "ListTenants" => list_tenants,
    "AddGrant" => add_grant,
    "ListGrants" => list_grants,
    "SetPriceBook" => set_price_book,
    "GetPriceBook" => get_price_book,
    "SetPlan" => set_plan,
    "GetPlan" => get_plan,
    "SetQuota" => set_quota,
    "DeleteQuota" => delete_quota,
    "GetPolicy" => get_policy,
    "SetTierFloor" => set_tier_floor,
    "SetAlertRule" => set_alert_rule,
    "ListAlertRules" => list_alert_rules,
    "DeleteAlertRule" => delete_alert_rule,
    "SetCreditPack" => set_credit_pack,
    "BuyCredits" => buy_credits,
    "GetBalance" => get_balance,
    "GetStatement" => get_statement,
    "ListTasks" => list_tasks,
    "RecentDenials" => recent_denials,
    "ExportAudit" => export_audit,
    "VerifyAudit" => verify_audit,
    "Estimate" => estimate,
    "WhatIf" => what_if,
}

/// What the API's handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    state: Arc<State>,
    svc: AdminSvc,
    service: ServiceDescriptor,
    openapi: Arc<String>,
}

/// The descriptor pool of `tollgate.v1` (built into the binary; it always decodes).
pub fn descriptor_pool() -> DescriptorPool {
    DescriptorPool::decode(tollgate_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into tollgate-proto decodes")
}

impl Api {
    /// Over the authority's shared state.
    pub fn new(state: Arc<State>) -> Api {
        let pool = descriptor_pool();
        let service = pool
            .get_service_by_name(ADMIN_SERVICE)
            .expect("tollgate.v1.AdminService is in the descriptor set");
        let openapi = Arc::new(openapi_document(&pool, &service).to_string());
        Api {
            svc: AdminSvc::new(state.clone()),
            state,
            service,
            openapi,
        }
    }

    /// The routes: `POST /v1/admin/{method}` and `GET /openapi.json`.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/v1/admin/{method}",
                post(call).fallback(|| async {
                    error_with(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &Status::unimplemented("admin calls are POST /v1/admin/<Method>"),
                    )
                }),
            )
            .route("/openapi.json", get(openapi))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }
}

async fn openapi(AxState(api): AxState<Api>) -> HttpResponse {
    json_response(api.openapi.as_bytes().to_vec())
}

async fn call(
    AxState(api): AxState<Api>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let Some(m) = api.service.methods().find(|m| m.name() == method) else {
        return error_response(&Status::not_found(format!(
            "no admin method {method:?}: see /openapi.json"
        )));
    };
    // The bearer token, as gRPC metadata; checked before the body is read (as the gRPC
    // server's interceptor does), then again by the service for its scope.
    let mut md = MetadataMap::new();
    if let Some(v) = headers.get(header::AUTHORIZATION)
        && let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes())
    {
        md.insert(tollgate_proto::AUTHORIZATION, v);
    }
    if let Err(s) = api.state.auth.authenticate(&md) {
        return error_response(&s);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let s = Status::resource_exhausted(format!("request body: {e}"));
            return error_with(e.status(), &s);
        }
    };
    let input = match decode_json(m.input(), &body) {
        Ok(b) => b,
        Err(s) => return error_response(&s),
    };
    let out = match dispatch(&api.svc, m.name(), md, input).await {
        Some(Ok(out)) => out,
        Some(Err(s)) => return error_response(&s),
        None => {
            return error_response(&Status::unimplemented(format!(
                "{method} is not served over HTTP"
            )));
        }
    };
    match encode_json(m.output(), &out) {
        Ok(j) => json_response(j),
        Err(s) => error_response(&s),
    }
}

/// JSON (proto3 mapping) to the protobuf encoding of `desc`. Empty = the empty message.
pub fn decode_json(desc: MessageDescriptor, body: &[u8]) -> Result<Vec<u8>, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &opts)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| {
            Status::invalid_argument(format!("body is not a JSON {}: {e}", desc.name()))
        })?;
    Ok(msg.encode_to_vec())
}

/// The protobuf encoding of `desc` to JSON, every field present.
pub fn encode_json(desc: MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, Status> {
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|e| Status::internal(format!("reply does not decode: {e}")))?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, &opts)
        .map_err(|e| Status::internal(format!("reply does not encode as JSON: {e}")))?;
    Ok(out)
}

// ---- OpenAPI ------------------------------------------------------------------------------

/// Leading comments by (file, source path).
fn comments(pool: &DescriptorPool) -> HashMap<(String, Vec<i32>), String> {
    let mut out = HashMap::new();
    for f in pool.files() {
        let fdp = f.file_descriptor_proto();
        let Some(info) = &fdp.source_code_info else {
            continue;
        };
        for loc in &info.location {
            if let Some(c) = &loc.leading_comments {
                let c = c
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim()
                    .to_string();
                if !c.is_empty() {
                    out.insert((f.name().to_string(), loc.path.clone()), c);
                }
            }
        }
    }
    out
}

fn field_schema(f: &FieldDescriptor) -> Value {
    let item = |k: Kind| -> Value {
        match k {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Message(m) => json!({"$ref": format!("#/components/schemas/{}", m.name())}),
            Kind::Enum(e) => json!({"$ref": format!("#/components/schemas/{}", e.name())}),
        }
    };
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return json!({"type": "object"});
        };
        json!({"type": "object", "additionalProperties": item(entry.map_entry_value_field().kind())})
    } else if f.is_list() {
        json!({"type": "array", "items": item(f.kind())})
    } else {
        item(f.kind())
    }
}

/// The OpenAPI 3.1 document of the admin API, from the descriptors.
pub fn openapi_document(pool: &DescriptorPool, service: &ServiceDescriptor) -> Value {
    let docs = comments(pool);
    let doc_of = |file: &str, path: &[i32]| docs.get(&(file.to_string(), path.to_vec())).cloned();
    let mut schemas = Map::new();
    for m in pool.all_messages() {
        if !m.full_name().starts_with("tollgate.") || m.is_map_entry() {
            continue;
        }
        let file = m.parent_file().name().to_string();
        let mut props = Map::new();
        for f in m.fields() {
            let mut s = field_schema(&f);
            if let Some(d) = doc_of(&file, f.path())
                && let Some(o) = s.as_object_mut()
            {
                // A `$ref` with siblings is valid in OpenAPI 3.1 (JSON Schema 2020-12).
                o.insert("description".into(), Value::String(d));
            }
            props.insert(f.name().to_string(), s);
        }
        let mut schema = json!({
            "type": "object",
            "properties": props,
            "additionalProperties": false,
        });
        if let Some(d) = doc_of(&file, m.path()) {
            schema["description"] = Value::String(d);
        }
        schemas.insert(m.name().to_string(), schema);
    }
    for e in pool.all_enums() {
        if !e.full_name().starts_with("tollgate.") {
            continue;
        }
        let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
        let mut schema = json!({"type": "string", "enum": names});
        if let Some(d) = doc_of(e.parent_file().name(), e.path()) {
            schema["description"] = Value::String(d);
        }
        schemas.insert(e.name().to_string(), schema);
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "Every error of the API: the gRPC status of the call, by name and number, and what is wrong.",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "grpc_code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": [
                        "cancelled", "unknown", "invalid_argument", "deadline_exceeded",
                        "not_found", "already_exists", "permission_denied",
                        "resource_exhausted", "failed_precondition", "aborted",
                        "out_of_range", "unimplemented", "internal", "unavailable",
                        "data_loss", "unauthenticated"]},
                    "grpc_code": {"type": "integer", "minimum": 1, "maximum": 16},
                    "message": {"type": "string"},
                },
            }},
        }),
    );

    let mut paths = Map::new();
    let error = json!({
        "description": "The call failed: see `error.code` (invalid_argument 400, unauthenticated 401, permission_denied 403, not_found 404, ...).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    for m in service.methods() {
        let summary = doc_of(m.parent_file().name(), m.path()).unwrap_or_default();
        paths.insert(
            format!("/v1/admin/{}", m.name()),
            json!({"post": {
                "operationId": m.name(),
                "summary": summary,
                "tags": ["admin"],
                "requestBody": {
                    "required": false,
                    "content": {"application/json": {"schema": {
                        "$ref": format!("#/components/schemas/{}", m.input().name())
                    }}},
                },
                "responses": {
                    "200": {
                        "description": format!("The {}.", m.output().name()),
                        "content": {"application/json": {"schema": {
                            "$ref": format!("#/components/schemas/{}", m.output().name())
                        }}},
                    },
                    "400": error.clone(),
                    "401": error.clone(),
                    "403": error.clone(),
                    "default": error.clone(),
                },
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tollgate authority admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every RPC of the gRPC service tollgate.v1.AdminService as POST /v1/admin/<Method>, its messages in the proto3 JSON mapping (proto field names, enums by name, 64-bit integers as numbers, bytes in base64). Same tokens and tenant scoping as gRPC: `Authorization: Bearer <token>`. Money is integer micro-credits (`*_micro`).",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_rpc_is_routed_and_documented() {
        let pool = descriptor_pool();
        let svc = pool.get_service_by_name(ADMIN_SERVICE).unwrap();
        let mut in_proto: Vec<String> = svc.methods().map(|m| m.name().to_string()).collect();
        let mut routed: Vec<String> = ADMIN_RPCS.iter().map(|s| s.to_string()).collect();
        in_proto.sort();
        routed.sort();
        assert_eq!(in_proto, routed);
        let doc = openapi_document(&pool, &svc);
        assert_eq!(doc["openapi"], "3.1.0");
        for m in svc.methods() {
            let op = &doc["paths"][format!("/v1/admin/{}", m.name())]["post"];
            assert_eq!(op["operationId"], m.name());
        }
        // The .proto comments are carried over.
        let balance = &doc["components"]["schemas"]["Balance"]["properties"]["held_micro"];
        assert_eq!(balance["description"], "Open holds (leases outstanding).");
    }

    #[test]
    fn json_round_trips_through_the_descriptors() {
        let pool = descriptor_pool();
        let g = pool.get_message_by_name("tollgate.v1.Grant").unwrap();
        let bytes = decode_json(
            g.clone(),
            br#"{"tenant":"acme","kind":"GRANT_KIND_TRIAL","amountMicro":"5","priority":-1}"#,
        )
        .unwrap();
        let grant = tollgate_proto::v1::Grant::decode(bytes.as_slice()).unwrap();
        assert_eq!(grant.amount_micro, 5);
        assert_eq!(grant.priority, -1);
        let out: Value = serde_json::from_slice(&encode_json(g.clone(), &bytes).unwrap()).unwrap();
        assert_eq!(out["amount_micro"], 5);
        assert_eq!(out["kind"], "GRANT_KIND_TRIAL");
        assert_eq!(out["remaining_micro"], 0);
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"nope":1}"#,
            br#"{"amount_micro":-1}"#,
            br#"{} {}"#,
        ] {
            let e = decode_json(g.clone(), bad).unwrap_err();
            assert_eq!(
                e.code(),
                Code::InvalidArgument,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
