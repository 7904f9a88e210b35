-- Argo CD health check for tritonop.dev/ModelDeployment.
-- Healthy: Ready=True for the current generation. Progressing: the operator has not observed
-- the current generation yet, or a canary (status.rollout), version switch or scale-up is under
-- way. Degraded: something failed (repository, scheduling, model load, server start), also
-- during a canary, or the current generation's canary was rolled back; with its message.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if status.observedGeneration == nil or status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
-- "a: b", or whichever of the two is set.
local function joined(a, b)
  if a == nil or a == "" then return b end
  if b == nil or b == "" then return a end
  return a .. ": " .. b
end
local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
local progress_reasons = {
  WaitingForReplicas = true, VersionSwitch = true, RollingOut = true, SwappingVersion = true,
  Loading = true, AwaitingReplacement = true, AwaitingVerification = true, AwaitingStaging = true, Staging = true,
  CanaryInProgress = true, CanaryPaused = true, CanaryWaiting = true,
}
local rollout = status.rollout
if rollout ~= nil and rollout.generation == obj.metadata.generation then
  if rollout.phase == "RolledBack" then
    hs.status = "Degraded"
    hs.message = joined("RolledBack v" .. tostring(rollout.canaryVersion), rollout.message)
    return hs
  end
  local running = { Waiting = true, Progressing = true, Paused = true, Promoting = true }
  if running[rollout.phase] and (ready == nil or ready.status == "True" or progress_reasons[ready.reason]) then
    hs.status = "Progressing"
    hs.message = joined(rollout.summary, rollout.message)
    return hs
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready == nil or progress_reasons[ready.reason] then
  hs.status = "Progressing"
  hs.message = ready and ready.message or "Waiting for the Ready condition"
  return hs
end
hs.status = "Degraded"
hs.message = ready.reason .. ": " .. ready.message
return hs
