-- Argo CD health check for mcp.warden.dev/MCPServerPolicy (resource.customizations.health.mcp.warden.dev_MCPServerPolicy).
-- Ready=True (the operator can enforce the policy) -> Healthy; Ready=False (a key, Secret, root, regular
-- expression or reference it cannot use; the webhook denies every image the policy governs) -> Degraded;
-- not checked yet, or a generation not checked yet -> Progressing.
hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the operator to check the policy"
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to check generation " .. obj.metadata.generation
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.status == "False" then
      hs.status = "Degraded"
    end
    hs.message = (c.reason or "") .. ": " .. (c.message or "")
    return hs
  end
end
return hs
