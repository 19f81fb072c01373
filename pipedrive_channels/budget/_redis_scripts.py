"""The Redis budget's Lua scripts: each runs atomically on the Redis server, with the server's clock (``TIME``)."""

# KEYS: slots, daily, hold. ARGV: limit, window_ms, in_flight_ms, cost, capacity (-1: no daily bucket),
# refill per ms, member, poll_ms. Answers {1, 0, 0} admitted, or {0, wait_ms, daily?}; wait_ms -1: never.
# Numbers go back as strings: Redis truncates Lua numbers to integers.
ADMIT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limit, window, in_flight = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, capacity, rate = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local poll = tonumber(ARGV[8])
local hold = redis.call('PTTL', KEYS[3])
if hold > 0 then return {0, tostring(hold), 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
local wait = 0
if count >= limit then
  local blocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  wait = tonumber(blocking[2]) - now
  -- Still in flight: its settle will free it sooner, and another process's settle is not announced. Poll.
  if wait > window then wait = poll end
end
local tokens = nil
if capacity >= 0 then
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then tokens = capacity; at = now end
  if now > at then tokens = math.min(capacity, tokens + (now - at) * rate) end
  if tokens < cost then
    if rate <= 0 then return {0, '-1', 1} end
    local daily_wait = (cost - tokens) / rate
    if daily_wait >= wait then return {0, tostring(daily_wait), 1} end
  end
end
if wait > 0 then return {0, tostring(wait), 0} end
redis.call('ZADD', KEYS[1], now + window + in_flight, ARGV[7])
redis.call('PEXPIRE', KEYS[1], math.ceil(window + in_flight) + 1000)
if tokens ~= nil then
  tokens = tokens - cost
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'at', tostring(now))
  -- Idle until full again is the same as absent.
  redis.call('PEXPIRE', KEYS[2], math.ceil((capacity - tokens) / rate) + 1000)
end
return {1, '0', 0}
"""

# KEYS: slots, daily. ARGV: member, cost, capacity (-1: no daily bucket). An admission nobody uses: free its
# slot and give back its cost, only if it was admitted and is still there (so releasing twice changes nothing).
RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local capacity = tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[2], 'tokens'))
if capacity >= 0 and tokens ~= nil then
  redis.call('HSET', KEYS[2], 'tokens', tostring(math.min(capacity, tokens + tonumber(ARGV[2]))))
end
return 1
"""

# KEYS: slots. ARGV: member, window_ms. The slot frees window after now (only if it is still there).
SETTLE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: daily, hold. ARGV: hold_ms (0: none), daily remaining (-1: none), capacity, refill per ms.
# Lengthens the shared hold, lowers the shared daily tokens; never shortens or raises either.
SYNC = """
if redis.replicate_commands then redis.replicate_commands() end
local hold = tonumber(ARGV[1])
if hold > 0 and redis.call('PTTL', KEYS[2]) < hold then
  redis.call('SET', KEYS[2], '1', 'PX', math.ceil(hold))
end
local remaining, capacity, rate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if remaining >= 0 and capacity >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then tokens = capacity; at = now end
  if now > at then tokens = math.min(capacity, tokens + (now - at) * rate) end
  tokens = math.max(0, math.min(tokens, remaining))
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  if rate > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000) end
end
return 1
"""
