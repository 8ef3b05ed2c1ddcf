-- Sliding-window log on a sorted set: the usual "ZSET rate limiter" as people write it today.
-- EVALSHA <sha> 1 key limit window_ms   (cost 1 per request)
-- Reply shaped like RATELIMIT.CHECK: {allowed, limit, remaining, retry_after_ms, reset_after_ms}.
-- Same semantics as tally: an entry recorded at t counts while now < t + window_ms; the
-- server's clock (TIME) is the time source.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
if used < limit then
  -- Members must be unique. Within one millisecond nothing is trimmed between calls, so
  -- "<now>-<count>" never repeats (the common `ZADD key now now` loses same-ms requests).
  redis.call('ZADD', key, now, now .. '-' .. used)
  redis.call('PEXPIRE', key, window)
  return {1, limit, limit - used - 1, 0, window}
end
-- Denied: the (used - limit)th oldest entry (0-based) must leave before one more fits.
local k = used - limit
local leaving = redis.call('ZRANGE', key, k, k, 'WITHSCORES')
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
return {0, limit, 0, tonumber(leaving[2]) + window - now, tonumber(newest[2]) + window - now}
