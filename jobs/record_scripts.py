"""The Lua scripts every record store shares: create a record (with idempotency and an owner index)
and move it between states, keeping the per-state counts in the same atomic step.

A record is a Redis hash with a ``status`` field and a TTL (its retention after the last change).
"""

# KEYS: idem key or "", record key, owner index, state counts.
# ARGV: fingerprint, job id, ttl, score, then field/value pairs.
CREATE_RECORD = """
if KEYS[1] ~= '' then
  local prior = redis.call('GET', KEYS[1])
  if prior then
    local sep = string.find(prior, ' ', 1, true)
    local fp, id = string.sub(prior, 1, sep - 1), string.sub(prior, sep + 1)
    if fp ~= ARGV[1] then return {'conflict', id} end
    return {'existing', id}
  end
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[4], 'queued', 1)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
-- the owner index outlives its records (which expire ttl after their last change) and sheds old ids
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[4]) - 2 * tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[3], 2 * tonumber(ARGV[3]))
return {'created', ARGV[2]}
"""
# KEYS: record key, state counts, then keys that live and die with the record (their TTL is renewed).
# ARGV: comma-separated allowed states, "1" to refuse when cancel was requested, ttl, new state, pairs.
# The counts move with the state, in the same atomic step.
TRANSITION_RECORD = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. status .. ',', 1, true) then return 0 end
if ARGV[2] == '1' and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 3, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
if status ~= ARGV[4] then
  redis.call('HINCRBY', KEYS[2], status, -1)
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
end
return 1
"""
