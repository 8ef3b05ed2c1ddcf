//! `GET /api/metrics/types`: every metric type in the type index (`tally:types`), sorted.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::routes::error::ApiError;
use crate::routes::AppState;

#[derive(Serialize)]
struct TypesBody {
    types: Vec<String>,
}

/// One `SMEMBERS` of the index, however many keys Redis holds (see `Store::metric_types`).
pub async fn types(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let types = state.store.metric_types().await?;
    Ok(HttpResponse::Ok().json(TypesBody { types }))
}
