-- wrk script for the bare-view ceiling (bench/bare.py): POST one event body, the same size as the
-- single-event phase's, with a new event_id each time.
local counter = 0
request = function()
  counter = counter + 1
  local body = '{"event_id":"bare-' .. counter .. '-' .. math.random(1, 1000000000) ..
    '","occurred_at":"2026-11-29T10:00:00Z","feature":"generation","model":"sd15","steps":30,"width":512,"height":512}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
