"""The Lua scripts of the month-to-date counters (budgets.counters, whose docstring says why each
step is safe), each run atomically by Redis."""

VISIBLE = """
local function less(a, b)  -- transaction ids as decimal text, of any size
  if #a ~= #b then return #a < #b end
  return a < b
end
local function visible(txid, snapshot)  -- PostgreSQL's rule for a committed transaction
  if txid == '' or not snapshot then return false end
  local xmin, xmax, xip = string.match(snapshot, '^(%d+):(%d+):(.*)$')
  if not xmin then return false end
  if less(txid, xmin) then return true end
  if not less(txid, xmax) then return false end
  for running in string.gmatch(xip, '%d+') do
    if running == txid then return false end
  end
  return true
end
"""
# KEYS: inflight, generation, pending, counters..., their snapshots...
# ARGV: release ('1': DECR inflight), generation TTL, pending TTL, transaction id ('' if none), deltas...
COMMIT = VISIBLE + """
local n = (#KEYS - 3) / 2
for i = 1, n do
  local counter, snapshot = KEYS[3 + i], KEYS[3 + n + i]
  if redis.call('EXISTS', counter) == 1 and not visible(ARGV[4], redis.call('GET', snapshot)) then
    redis.call('INCRBY', counter, ARGV[4 + i])
  end
end
if ARGV[1] == '1' and tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return 1 end
return 0
"""
START = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""
RELEASE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""
STORE_LIMITS = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3])
return 1
"""
LIMITS_CHANGED = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
"""
# KEYS: inflight, generation, counters..., their run ids..., their snapshots...
# ARGV: generation seen, TTL, run id, snapshot ('' when none), sums...
STORE = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return 0 end
local n = (#KEYS - 2) / 3
for i = 1, n do
  local counter, run, snapshot = KEYS[2 + i], KEYS[2 + n + i], KEYS[2 + 2 * n + i]
  if redis.call('GET', run) ~= ARGV[3] or redis.call('EXISTS', counter) == 0 then
    redis.call('SET', counter, ARGV[4 + i], 'EX', ARGV[2])
    redis.call('SET', run, ARGV[3], 'EX', ARGV[2])
    if ARGV[4] == '' then redis.call('DEL', snapshot) else redis.call('SET', snapshot, ARGV[4], 'EX', ARGV[2]) end
  end
end
return 1
"""
