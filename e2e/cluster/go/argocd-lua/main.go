// Command argocd-lua-health runs an Argo CD resource health check (health.lua) against the
// cases of its health_test.yaml, on gopher-lua — the Lua engine Argo CD embeds — set up the
// way Argo CD's util/lua sets up its VM:
//
//   - the global `obj` holds the resource, decoded from unstructured (numbers as Lua numbers);
//   - only the package, base and table libraries are opened, plus a preloaded `os` with
//     time() and date() — unless open libraries are on (`resource.customizations.useOpenLibs.<key>`
//     in argocd-cm, and always for Argo CD's built-in checks), which opens all of Lua's
//     standard libraries (string, math, ...);
//   - the script runs under a 1 s deadline and must return a table, encoded to JSON as
//     {status, message}; a status outside Healthy, Progressing, Degraded, Suspended, Missing,
//     Unknown becomes Unknown "Lua returned an invalid health status"; nil is an empty status.
//
// Every case runs twice, without and with open libraries, so a check installed through
// argocd-cm (no string or math library) behaves like one built into Argo CD.
//
//	argocd-lua-health DIR              DIR holds health.lua and health_test.yaml
//	                                   (tests: - healthStatus: {status, message}
//	                                             inputPath: testdata/x.yaml)
//	argocd-lua-health -f OBJ.yaml DIR  print the health of one object
//
// Built by e2e/cluster/build.sh at the gopher-lua version pinned in e2e/cluster/versions.env.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// healthStatus is Argo CD's health.HealthStatus.
type healthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

func main() {
	one := flag.String("f", "", "print the health of the object in this YAML file instead of running the tests")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: argocd-lua-health [-f OBJ.yaml] DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dir := flag.Arg(0)
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fail(err)
	}
	if *one != "" {
		obj, err := readObject(*one)
		if err != nil {
			fail(err)
		}
		for _, open := range []bool{false, true} {
			hs, err := health(obj, string(script), open)
			if err != nil {
				fail(fmt.Errorf("openLibs=%v: %w", open, err))
			}
			fmt.Printf("openLibs=%v: %s %s\n", open, hs.Status, hs.Message)
		}
		return
	}
	os.Exit(runTests(dir, string(script)))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "argocd-lua-health:", err)
	os.Exit(2)
}

func runTests(dir, script string) int {
	data, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fail(err)
	}
	var tests struct {
		Tests []struct {
			InputPath    string       `json:"inputPath"`
			HealthStatus healthStatus `json:"healthStatus"`
		} `json:"tests"`
	}
	if err := yaml.UnmarshalStrict(data, &tests); err != nil {
		fail(fmt.Errorf("health_test.yaml: %w", err))
	}
	if len(tests.Tests) == 0 {
		fail(fmt.Errorf("health_test.yaml: no tests"))
	}
	failed := 0
	for _, tc := range tests.Tests {
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			fail(err)
		}
		ok := true
		for _, open := range []bool{false, true} {
			hs, err := health(obj, script, open)
			switch {
			case err != nil:
				fmt.Printf("FAIL %s (openLibs=%v): %v\n", tc.InputPath, open, err)
				ok = false
			case *hs != tc.HealthStatus:
				fmt.Printf("FAIL %s (openLibs=%v):\n  got  %s %q\n  want %s %q\n", tc.InputPath, open,
					hs.Status, hs.Message, tc.HealthStatus.Status, tc.HealthStatus.Message)
				ok = false
			}
		}
		if ok {
			fmt.Printf("ok   %s: %s %s\n", tc.InputPath, tc.HealthStatus.Status, tc.HealthStatus.Message)
		} else {
			failed++
		}
	}
	fmt.Printf("argocd health: %d passed, %d failed (%s)\n", len(tests.Tests)-failed, failed, dir)
	if failed > 0 {
		return 1
	}
	return 0
}

// readObject decodes a YAML object the way Argo CD's own health tests do
// (sigs.k8s.io/yaml into map[string]any).
func readObject(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// health runs script against obj like Argo CD's VM.ExecuteHealthLua.
func health(obj map[string]any, script string, openLibs bool) (*healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	// Argo CD's "safe" os: only time() and date(); `require("os")` loads it.
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{
			"time": func(l *lua.LState) int { l.Push(lua.LNumber(time.Now().Unix())); return 1 },
			"date": func(l *lua.LState) int { l.Push(lua.LString(time.Now().Format(time.RFC3339))); return 1 },
		}))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return &healthStatus{}, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	js, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	hs := &healthStatus{}
	if err := json.Unmarshal(js, hs); err != nil {
		if string(js) == "[]" { // an empty table encodes as an array
			return &healthStatus{}, nil
		}
		return nil, fmt.Errorf("the returned table %s: %w", js, err)
	}
	if !validStatus[hs.Status] {
		return &healthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return hs, nil
}

// decodeValue is Argo CD's conversion of an unstructured object into Lua values.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}
