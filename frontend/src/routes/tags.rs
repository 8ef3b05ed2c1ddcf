//! `GET /api/metrics/tags?metric_type=cpu`: the type's tag sets (how many) and each tag key's
//! values, sorted, from the type's series index (one `SMEMBERS`, no keyspace scan).

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::labels;
use crate::policies::Class;
use crate::routes::error::ApiError;
use crate::routes::limit;
use crate::routes::metrics::{metric_type, parse_query};
use crate::routes::AppState;

#[derive(Deserialize)]
struct TagsQuery {
    metric_type: Option<String>,
}

#[derive(Serialize)]
struct TagsBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    series: usize,
    tags: BTreeMap<String, BTreeSet<String>>,
}

pub async fn tags(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let query: TagsQuery = parse_query(&req)?;
    let kind = metric_type(query.metric_type.as_deref())?;
    let granted = limit::enforce(&state, &req, Class::Read, 1).await?;
    let (series, tags) = labels::tag_values(&state.store, kind).await?;
    let mut resp = HttpResponse::Ok();
    granted.write_headers(&mut resp);
    Ok(resp.json(TagsBody { kind, series, tags }))
}
