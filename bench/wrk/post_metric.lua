-- wrk script: POST /api/metrics with the SPEC's example body.
-- wrk -t2 -c64 -d5s --latency -s bench/wrk/post_metric.lua http://127.0.0.1:PORT/api/metrics
wrk.method = "POST"
wrk.body = '{"timestamp":"2025-01-01T10:00:00","value":75,"type":"cpu"}'
wrk.headers["Content-Type"] = "application/json"
