-- wrk script for bench/ingest.py's single-event phase: one usage event per POST /api/v1/events,
-- each with a new event_id, with the event mix of bench/data.py.
--
-- Run with as many threads as connections (wrk -t N -c N): each thread then has one connection,
-- so every response pairs with the request before it and the script measures each latency
-- itself. The threads share a little memory (LuaJIT FFI): each publishes how many answers it
-- has had, and the first to see the total reached (or the deadline passed) raises a stop flag
-- that the others see at their next answer. A thread that stops writes thread-<n>.txt to the
-- output folder and prints "MB-THREAD-DONE <n>"; bench/clients.py ends wrk once all have.
--
-- A stopped thread never has a request of the run in flight, so the 200s it counted are exactly
-- the events sent. It does not call wrk.thread:stop() either: gunicorn's sync workers close every
-- connection, wrk reconnects at once, and an idle reconnection would hold a worker (blocked
-- reading) and starve the threads still running. It sends cheap unauthenticated GETs (401, no
-- database, not counted) instead, until bench/clients.py ends wrk.
--
-- Arguments after `--`: prefix total_requests seconds window_start window_end out_dir seed
-- (window_*: Unix seconds; occurred_at is drawn from that window). The API key comes from the
-- environment variable MB_BENCH_API_KEY, not from the command line.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } mb_timespec;
int clock_gettime(int clk_id, mb_timespec *tp);
]]
local CLOCK_MONOTONIC = 1 -- the clock Python's time.monotonic() reads
local timespec = ffi.new("mb_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

local SD15 = { { 512, 512 }, { 512, 576 }, { 512, 640 }, { 512, 688 }, { 512, 704 }, { 512, 768 }, { 512, 912 }, { 512, 1024 } }
local SDXL = { { 1024, 1024 }, { 1024, 1152 }, { 1024, 1280 }, { 1024, 1376 }, { 1024, 1408 }, { 1024, 1536 }, { 1024, 1824 }, { 1024, 2048 } }
local TABLE_STEPS = { 30, 50, 100, 150 }
local OFF_TABLE_STEPS = { 20, 25, 40, 75 }
-- upscaling 10, background_removal 7, captioning 6, magic_prompt 3, detection 2, pixelate 1
local ADD_ONS = {}
for name, weight in pairs({ upscaling = 10, background_removal = 7, captioning = 6, magic_prompt = 3, detection = 2, pixelate = 1 }) do
  for _ = 1, weight do ADD_ONS[#ADD_ONS + 1] = name end
end
table.sort(ADD_ONS)
local QUANTITIES = { 1, 1, 1, 2, 2, 3, 4 }

local function pick(list) return list[math.random(#list)] end

-- Slot 0: the stop flag; slot n: thread n's answers so far. Allocated in wrk's main Lua state,
-- which lives as long as wrk; the threads get its address.
local MAX_THREADS = 255
local shared_block = ffi.new("int64_t[?]", MAX_THREADS + 1)
local threads_seen = 0
function setup(thread)
  threads_seen = threads_seen + 1
  assert(threads_seen <= MAX_THREADS, "too many wrk threads")
  thread:set("tid", threads_seen)
  thread:set("shared_address", tonumber(ffi.cast("uintptr_t", shared_block)))
end

function init(args)
  prefix = args[1]
  total = tonumber(args[2])
  deadline = now_us() + tonumber(args[3]) * 1000000
  window_start, window_end = tonumber(args[4]), tonumber(args[5])
  out_path = string.format("%s/thread-%d.txt", args[6], tid)
  math.randomseed(tonumber(args[7]) + tid * 7919)
  slots = ffi.cast("volatile int64_t *", shared_address)
  -- Day strings are made here, in wrk's main thread, so that no running thread calls os.date.
  days = {}
  for day = 0, math.floor((window_end - window_start) / 86400) do
    days[day] = os.date("!%Y-%m-%d", window_start + day * 86400)
  end
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("MB_BENCH_API_KEY") or "")
  made, answered, ok, bad, bad_sample, stopped = 0, 0, 0, 0, "", false
  filler = wrk.format("GET", "/api/v1/events", {}) -- Host only: answered 401 before any query
  latencies, first_start, last_end, sent_at = {}, nil, nil, nil
end

local function occurred_at()
  local offset = math.random(0, window_end - window_start)
  local second = offset % 86400
  return string.format("%sT%02d:%02d:%02dZ", days[math.floor(offset / 86400)],
    math.floor(second / 3600), math.floor(second % 3600 / 60), second % 60)
end

local function event_body()
  made = made + 1
  local parts = {
    string.format('{"event_id":"%s%06x%06x-%d-%d","occurred_at":"%s"', prefix,
      math.random(0, 0xffffff), math.random(0, 0xffffff), tid, made, occurred_at()),
  }
  local roll = math.random()
  if roll < 0.70 then
    local sdxl = math.random() < 0.45
    local size = pick(sdxl and SDXL or SD15)
    local width, height = size[1], size[2]
    if math.random() < 0.3 then width, height = height, width end
    local steps = (math.random() < 0.9) and pick(TABLE_STEPS) or pick(OFF_TABLE_STEPS)
    parts[#parts + 1] = string.format(',"feature":"generation","model":"%s","steps":%d,"width":%d,"height":%d',
      sdxl and "sdxl" or "sd15", steps, width, height)
    if math.random() < 0.15 then parts[#parts + 1] = ',"composition_control":true' end
  elseif roll < 0.998 then
    parts[#parts + 1] = string.format(',"feature":"%s"', pick(ADD_ONS))
  else
    parts[#parts + 1] = ',"feature":"training"'
  end
  local quantity = pick(QUANTITIES)
  if quantity ~= 1 or math.random() < 0.5 then parts[#parts + 1] = string.format(',"quantity":%d', quantity) end
  if math.random() < 0.05 then parts[#parts + 1] = ',"spot":true' end
  if math.random() < 0.6 then
    parts[#parts + 1] = string.format(',"metadata":{"request_id":"req_%08x%08x","generator_id":"gen-%d"}',
      math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(1, 40))
  end
  parts[#parts + 1] = "}"
  return table.concat(parts)
end

function request()
  if stopped then return filler end
  local body = event_body()
  sent_at = now_us()
  return wrk.format("POST", "/api/v1/events", nil, body)
end

local function finish()
  local out = assert(io.open(out_path, "w"))
  out:write(string.format("%d %d %d %d %d\n", answered, ok, bad, first_start or 0, last_end or 0))
  out:write((bad_sample:gsub("[\r\n]", " ")), "\n")
  out:write(table.concat(latencies, "\n"), "\n")
  out:close()
  io.write(string.format("MB-THREAD-DONE %d\n", tid))
  io.flush()
end

local function total_answered()
  local sum = 0
  for n = 1, MAX_THREADS do sum = sum + tonumber(slots[n]) end
  return sum
end

function response(status, headers, body)
  if stopped then return end -- a filler's answer
  local now = now_us()
  answered = answered + 1
  latencies[answered] = now - sent_at
  first_start = first_start or sent_at
  last_end = now
  if status == 200 and body:find('"accepted":1,', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad_sample == "" then bad_sample = status .. " " .. body:sub(1, 300) end
  end
  slots[tid] = answered
  if slots[0] ~= 0 or now >= deadline or total_answered() >= total then
    slots[0] = 1
    stopped = true
    finish()
  end
end
