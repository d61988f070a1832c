// Package argocd holds the Argo CD health check for MCPServer, a Lua script in the form Argo CD's
// resource.customizations use, and runs it with gopher-lua, the interpreter Argo CD embeds, so tests can
// check it against real objects.
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

// Health statuses Argo CD understands.
const (
	Healthy     = "Healthy"
	Progressing = "Progressing"
	Degraded    = "Degraded"
	Suspended   = "Suspended"
)

// Health runs the health check on an MCPServer (as decoded JSON) and returns Argo CD's status and message.
func Health(obj map[string]any) (status, message string, err error) {
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
	if err := L.DoString(HealthScript); err != nil {
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
