-- Records by id. KEYS[1] epoch; ARGV: prefix, tenant:resource, lease
-- token, lease ms, ids... One reply per id: the entry ('R'..bytes), 1 (a
-- miss: the caller now holds the lease and may fill) or 0 (a miss while
-- another caller holds the lease: do not fill).
local P, B, token, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local base = P .. counter(KEYS[1]) .. ':' .. B .. ':' .. counter(P .. 'rg:' .. B) .. ':r:'
local out = {}
for i = 5, #ARGV do
  local k = base .. ARGV[i]
  local v = redis.call('GET', k)
  if v and string.byte(v, 1) == 82 then
    out[#out + 1] = v
  elseif v then
    out[#out + 1] = 0
  else
    redis.call('SET', k, 'L' .. token, 'PX', lease_ms)
    out[#out + 1] = 1
  end
end
return out
