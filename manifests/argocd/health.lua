-- Argo CD health check for tritonop.dev/ModelDeployment.
-- Healthy: Ready=True for the current generation. Progressing: the operator has not observed
-- the current generation yet, or a rollout / version switch / scale-up is under way.
-- Degraded: something failed (repository, scheduling, model load, server start), with its message.
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
local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
local progress_reasons = { WaitingForReplicas = true, VersionSwitch = true, RollingOut = true }
if ready == nil or progress_reasons[ready.reason] then
  hs.status = "Progressing"
  hs.message = ready and ready.message or "Waiting for the Ready condition"
  return hs
end
hs.status = "Degraded"
hs.message = ready.reason .. ": " .. ready.message
return hs
