//! `GET /health`: 200 `{"status":"ok"}` when Redis answers and the module is loaded (and, in
//! cluster mode, every slot is served); else 503 `{"status":"unavailable","detail":...}` (the
//! detail says what is wrong; the Redis error itself is logged).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::routes::error::store_detail;
use crate::routes::AppState;

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.store.health().await {
        Ok(()) => HttpResponse::Ok().json(Health {
            status: "ok",
            detail: None,
        }),
        Err(e) => {
            log::warn!("health check failed: {e}");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "unavailable",
                detail: Some(store_detail(&e)),
            })
        }
    }
}
