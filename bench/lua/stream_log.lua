-- Sliding-window log on a stream: XTRIM MINID + XLEN + XADD, the other way people build it.
-- EVALSHA <sha> 1 key limit window_ms   (cost 1 per request)
-- Reply shaped like RATELIMIT.CHECK: {allowed, limit, remaining, retry_after_ms, reset_after_ms}.
-- Entry IDs are <ms>-<seq> from the server clock; an entry counts while now < ms + window_ms,
-- so everything with ms <= now - window_ms is trimmed (exact trimming, not `~`).
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('XTRIM', key, 'MINID', now - window + 1)
local used = redis.call('XLEN', key)
if used < limit then
  redis.call('XADD', key, '*', 'c', '1')
  -- Without an expiry an idle client's stream would live forever (tally expires its logs too).
  redis.call('PEXPIRE', key, window)
  return {1, limit, limit - used - 1, 0, window}
end
-- Denied: the (used - limit + 1)th oldest entry must leave before one more fits.
local leaving = redis.call('XRANGE', key, '-', '+', 'COUNT', used - limit + 1)
local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
return {0, limit, 0, ms(leaving[#leaving][1]) + window - now, ms(newest[1][1]) + window - now}
