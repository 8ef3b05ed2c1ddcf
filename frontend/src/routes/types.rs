//! `GET /api/metrics/types`: every metric type that has a series, sorted.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::error::ApiError;
use crate::startup::AppState;

#[derive(Serialize)]
struct TypesBody {
    types: Vec<String>,
}

/// `SCAN ... MATCH metric:* TYPE tally-met` over every primary (see `Store::metric_types`).
pub async fn types(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let types = state.store.metric_types().await?;
    Ok(HttpResponse::Ok().json(TypesBody { types }))
}
