-- Shared by every script (prepended by cache/mod.rs). A counter (the epoch,
-- a generation) that is missing starts at the server's clock in µs, so one
-- lost to a restart or an eviction never comes back to a value it had.
local function counter(k)
  local v = redis.call('GET', k)
  if not v then
    local t = redis.call('TIME')
    v = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', k, v)
  end
  return v
end
