-- Argo CD health check for mcp.warden.dev/MCPServer (resource.customizations.health.mcp.warden.dev_MCPServer).
-- Maps the operator's kstatus conditions: Stalled, Verified=False or ToolsPinned=False (a tool changed after
-- it was pinned and awaits a person's approval) -> Degraded, Ready -> Healthy, Reconciling or a spec
-- generation the operator has not observed yet -> Progressing, zero replicas -> Suspended.
hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the operator to reconcile the MCPServer"
if obj.status == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
local verified = conditions["Verified"]
if verified ~= nil and verified.status == "False" then
  hs.status = "Degraded"
  hs.message = "Image not verified: " .. (verified.message or "")
  return hs
end
local pinned = conditions["ToolsPinned"]
if pinned ~= nil and pinned.status == "False" then
  hs.status = "Degraded"
  hs.message = "Tool definition changed: " .. (pinned.message or "")
  return hs
end
if obj.spec ~= nil and obj.spec.replicas == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = (reconciling.reason or "Reconciling") .. ": " .. (reconciling.message or "")
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  local egress = conditions["EgressEnforced"]
  if egress ~= nil and egress.status == "False" then
    hs.message = hs.message .. "; " .. (egress.message or "some egress entries are not enforced")
  end
  return hs
end
if ready ~= nil then
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs
