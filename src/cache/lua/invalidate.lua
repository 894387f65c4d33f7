-- After a commit. KEYS[1] epoch; ARGV: prefix, channel ('' without near
-- caches), then per resource: tenant:resource, bulk (1: every record of it
-- may have changed), n, n ids. Deletes the records' entries (leases
-- included), moves the record generation on bulk changes and the query
-- generation always, and tells near caches.
local P, ch = ARGV[1], ARGV[2]
local e = counter(KEYS[1])
local msg = {}
local i = 3
while i <= #ARGV do
  local B, bulk, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local rgk = P .. 'rg:' .. B
  counter(rgk)
  if bulk == '1' then
    redis.call('INCR', rgk)
    msg[#msg + 1] = B .. ':*'
  end
  local base = P .. e .. ':' .. B .. ':' .. redis.call('GET', rgk) .. ':r:'
  for j = i, i + n - 1 do
    redis.call('DEL', base .. ARGV[j])
    msg[#msg + 1] = B .. ':' .. ARGV[j]
  end
  i = i + n
  local gk = P .. 'g:' .. B
  counter(gk)
  redis.call('INCR', gk)
end
if ch ~= '' and #msg > 0 then redis.call('PUBLISH', ch, table.concat(msg, '\n')) end
return 1
