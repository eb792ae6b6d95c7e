-- Argo CD health of a Freight MigrationJob (freight.dev/v1alpha1).
--
-- Install it under resource.customizations.health.freight.dev_MigrationJob in argocd-cm
-- (see the README, "GitOps health"). Uses only Lua's base library: a check from argocd-cm
-- runs without the string, math and os libraries unless useOpenLibs is set for it.
--
--   no status yet, or status for an older generation   Progressing
--   Stalled=True (blocked on a problem a person must fix, or over the failure budget)
--                                                       Degraded, with the Stalled message
--   Failed                                              Degraded, with the Failed message
--   Planning, Running, Pending (not stalled)            Progressing, phase and progress
--   Suspended                                           Suspended
--   Succeeded                                           Healthy
--   CompletedWithErrors                                 Healthy, saying how many records failed
--     (the job finished within the failure budget its spec allows; the rejected records
--     are kept for spec.retryFailed. Degraded would keep the Application Degraded for a
--     job that did what it was told.)

local function condition(ctype)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function isTrue(ctype)
  local c = condition(ctype)
  return c ~= nil and c.status == "True"
end

-- The message of a condition, or fallback when it has none.
local function messageOf(ctype, fallback)
  local c = condition(ctype)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local function count(v)
  if v == nil then
    return "0"
  end
  return tostring(v)
end

local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local phase = status.phase
if phase == nil then
  phase = "Pending"
end

if isTrue("Stalled") then
  hs.status = "Degraded"
  hs.message = messageOf("Stalled", phase)
  return hs
end

if phase == "Failed" or isTrue("Failed") then
  hs.status = "Degraded"
  hs.message = messageOf("Failed", "Failed")
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend is true)"
  if status.progress ~= nil then
    hs.message = "Suspended at " .. status.progress .. " (spec.suspend is true)"
  end
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded: " .. count(status.processedRecords) .. " records copied"
  return hs
end

if phase == "CompletedWithErrors" then
  hs.status = "Healthy"
  hs.message = "Completed with errors: " .. count(status.failedRecords) .. " of "
    .. count(status.totalRecords) .. " records failed (within the failure budget); "
    .. "fix them and increase spec.retryFailed to copy them again"
  return hs
end

-- Pending (not stalled: e.g. waiting for a transient problem to pass), Planning, Running.
hs.status = "Progressing"
if phase == "Planning" then
  hs.message = "Planning"
  if status.totalRecords ~= nil then
    hs.message = "Planning: " .. count(status.totalRecords) .. " records measured so far"
  end
elseif phase == "Running" then
  hs.message = "Running"
  if status.progress ~= nil then
    hs.message = "Running: " .. status.progress .. " (" .. count(status.processedRecords)
      .. " of " .. count(status.totalRecords) .. " records copied, "
      .. count(status.failedRecords) .. " failed)"
  end
  if isTrue("Degraded") then
    hs.message = hs.message .. "; " .. messageOf("Degraded", "degraded")
  end
else
  hs.message = phase .. ": " .. messageOf("Ready", "waiting")
end
return hs
