// Package argocd holds the Argo CD health checks for MCPServer and MCPServerPolicy, Lua scripts in the
// form Argo CD's resource.customizations use, and runs them with gopher-lua, the interpreter Argo CD
// embeds, so tests can check them against real objects.
package argocd

import (
	_ "embed"
	"errors"
	"fmt"

	lua "github.com/yuin/gopher-lua"
)

// HealthScript is the Lua health check (the single source; the chart and config/argocd carry copies made
// by `make manifests`).
//
//go:embed mcpserver-health.lua
var HealthScript string

// PolicyHealthScript is the Lua health check for MCPServerPolicy (copied like HealthScript).
//
//go:embed mcpserverpolicy-health.lua
var PolicyHealthScript string

// Scripts are the health checks by the kind they are for, with the file each is kept in.
var Scripts = []struct {
	Kind, File, Script string
}{
	{"MCPServer", "mcpserver-health.lua", HealthScript},
	{"MCPServerPolicy", "mcpserverpolicy-health.lua", PolicyHealthScript},
}

// Health statuses Argo CD understands.
const (
	Healthy     = "Healthy"
	Progressing = "Progressing"
	Degraded    = "Degraded"
	Suspended   = "Suspended"
)

// Health runs the health check on an MCPServer (as decoded JSON) and returns Argo CD's status and message.
func Health(obj map[string]any) (status, message string, err error) {
	return run(HealthScript, obj)
}

// PolicyHealth runs the health check on an MCPServerPolicy (as decoded JSON).
func PolicyHealth(obj map[string]any) (status, message string, err error) {
	return run(PolicyHealthScript, obj)
}

func run(script string, obj map[string]any) (status, message string, err error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", fmt.Errorf("run health script: %w", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", errors.New("health script did not return a table")
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message")), nil
}

// toLua converts decoded JSON into Lua values as Argo CD does: objects and arrays become tables.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	}
	return lua.LString(fmt.Sprint(v))
}
