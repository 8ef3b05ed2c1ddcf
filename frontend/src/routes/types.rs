//! `GET /api/metrics/types`: every metric type in the type index (`tally:types`), sorted.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::policies::Class;
use crate::routes::error::ApiError;
use crate::routes::limit;
use crate::routes::AppState;

#[derive(Serialize)]
struct TypesBody {
    types: Vec<String>,
}

/// One `SMEMBERS` of the index, however many keys Redis holds (see `Store::metric_types`).
pub async fn types(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let granted = limit::enforce(&state, &req, Class::Read, 1).await?;
    let types = state.store.metric_types().await?;
    let mut resp = HttpResponse::Ok();
    granted.write_headers(&mut resp);
    Ok(resp.json(TypesBody { types }))
}
