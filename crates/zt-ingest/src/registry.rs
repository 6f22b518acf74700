//! The read endpoints of the Confluent Schema Registry API for zhongtai's own schemas, so
//! any Confluent deserializer (and ClickHouse's `AvroConfluent` format) can decode the
//! topics. Subjects follow the TopicNameStrategy: `<topic>-value`. Ids are the catalogue's
//! stable ids; versions are the catalogue's versions of the record.

use axum::Json;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use zt_kafka::TopicsConfig;
use zt_model::Catalogue;
use zt_model::catalogue::SchemaEntry;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The subjects and the record each carries.
pub fn subjects(topics: &TopicsConfig) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = zt_model::Source::ALL
        .into_iter()
        .map(|s| (format!("{}-value", topics.events(s)), "zt.Event"))
        .collect();
    out.push((format!("{}-value", topics.events_resolved()), "zt.Event"));
    out.push((format!("{}-value", topics.dlq()), "zt.DeadLetter"));
    out
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], Json(body)).into_response()
}

fn not_found(code: u32, message: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({ "error_code": code, "message": message }),
    )
}

/// `GET /schemas/ids/{id}`.
pub async fn schema_by_id(Path(id): Path<String>) -> Response {
    match id
        .parse::<u32>()
        .ok()
        .and_then(|id| Catalogue::builtin().by_id(id).ok())
    {
        Some(e) => reply(StatusCode::OK, json!({ "schema": e.text })),
        None => not_found(40403, "Schema not found"),
    }
}

/// `GET /subjects`.
pub async fn list_subjects(topics: &TopicsConfig) -> Response {
    let names: Vec<String> = subjects(topics).into_iter().map(|(s, _)| s).collect();
    reply(StatusCode::OK, json!(names))
}

fn record_of(topics: &TopicsConfig, subject: &str) -> Option<&'static str> {
    subjects(topics)
        .into_iter()
        .find(|(s, _)| s == subject)
        .map(|(_, r)| r)
}

/// `GET /subjects/{subject}/versions`.
pub async fn versions(topics: &TopicsConfig, subject: &str) -> Response {
    match record_of(topics, subject) {
        Some(rec) => {
            let v: Vec<u32> = Catalogue::builtin()
                .versions(rec)
                .map(|e| e.version)
                .collect();
            reply(StatusCode::OK, json!(v))
        }
        None => not_found(40401, "Subject not found"),
    }
}

/// `GET /subjects/{subject}/versions/{version}` (`latest` or a number).
pub async fn version(topics: &TopicsConfig, subject: &str, version: &str) -> Response {
    let Some(rec) = record_of(topics, subject) else {
        return not_found(40401, "Subject not found");
    };
    let cat = Catalogue::builtin();
    let entry: Option<&SchemaEntry> = if version == "latest" || version == "-1" {
        cat.latest(rec).ok()
    } else {
        version
            .parse::<u32>()
            .ok()
            .and_then(|n| cat.versions(rec).find(|e| e.version == n))
    };
    match entry {
        Some(e) => reply(
            StatusCode::OK,
            json!({ "subject": subject, "version": e.version, "id": e.id, "schema": e.text }),
        ),
        None => not_found(40402, "Version not found"),
    }
}
