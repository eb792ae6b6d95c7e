// Command kstatus-check prints how kstatus — sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute,
// the library Flux, kpt and `kubectl wait`-style tooling use — reads Freight MigrationJobs.
// Built by e2e/cluster/build.sh at the cli-utils version pinned in e2e/cluster/versions.env.
//
//	kstatus-check -n NS NAME      the MigrationJob NAME of namespace NS, read from the API
//	                              server ($KUBECONFIG); prints "<Status> <message>"
//	kstatus-check -f FILE|-       every object of a (multi-document) YAML file or stdin,
//	                              one "<Status> <message>" line each
//	kstatus-check -test FILE      the cases of a kstatus_test.yaml:
//	                                tests:
//	                                - kstatus: {status: Current, message: "..."}  # message optional
//	                                  inputPath: testdata/succeeded.yaml           # relative to FILE
//	                              prints one line per case, exits 1 on any mismatch
//
// -expect STATUS (with -n or -f) exits 1 unless every object has that status.
// -phase prefixes each line with the object's status.phase ("-" when it has none), so a
// caller can tell which phase the very object kstatus read was in.
// Exit status 2 means the objects could not be read.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

var migrationJobs = schema.GroupVersionResource{Group: "freight.dev", Version: "v1alpha1", Resource: "migrationjobs"}

func main() {
	namespace := flag.String("n", "", "namespace of the MigrationJob to read from the API server")
	file := flag.String("f", "", "read objects from this YAML file (- for stdin) instead of the API server")
	test := flag.String("test", "", "run the cases of this kstatus_test.yaml")
	expect := flag.String("expect", "", "exit 1 unless the status is this one (InProgress, Current, Failed, ...)")
	withPhase := flag.Bool("phase", false, "prefix each line with the object's status.phase (- when it has none)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(),
			"usage: kstatus-check -n NS NAME | -f FILE|- | -test kstatus_test.yaml  [-expect STATUS] [-phase]\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	var objs []*unstructured.Unstructured
	var err error
	switch {
	case *test != "":
		os.Exit(runTests(*test))
	case *file != "":
		objs, err = readFile(*file)
	case *namespace != "" && flag.NArg() == 1:
		var u *unstructured.Unstructured
		u, err = readAPI(*namespace, flag.Arg(0))
		objs = []*unstructured.Unstructured{u}
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(2)
	}
	rc := 0
	for _, u := range objs {
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus-check: %s/%s: %v\n", u.GetNamespace(), u.GetName(), err)
			os.Exit(2)
		}
		if *withPhase {
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			if phase == "" {
				phase = "-"
			}
			fmt.Printf("%s ", phase)
		}
		fmt.Printf("%s %s\n", res.Status, res.Message)
		if *expect != "" && res.Status.String() != *expect {
			fmt.Fprintf(os.Stderr, "kstatus-check: %s: expected %s, got %s\n", u.GetName(), *expect, res.Status)
			rc = 1
		}
	}
	os.Exit(rc)
}

// readAPI gets one MigrationJob through the dynamic client, as unstructured
// (exactly what kstatus' watchers in Flux and kpt see).
func readAPI(namespace, name string) (*unstructured.Unstructured, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return client.Resource(migrationJobs).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
}

// readFile decodes every non-empty document of a YAML (or JSON) file.
// Numbers become int64 as they do for objects read from the API server.
func readFile(path string) ([]*unstructured.Unstructured, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []*unstructured.Unstructured
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no objects", path)
	}
	return objs, nil
}

type testFile struct {
	Tests []struct {
		InputPath string `json:"inputPath"`
		KStatus   struct {
			Status  string  `json:"status"`
			Message *string `json:"message"`
		} `json:"kstatus"`
	} `json:"tests"`
}

func runTests(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		return 2
	}
	var tf testFile
	if err := yaml.UnmarshalStrict(data, &tf); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus-check: %s: %v\n", path, err)
		return 2
	}
	if len(tf.Tests) == 0 {
		fmt.Fprintf(os.Stderr, "kstatus-check: %s: no tests\n", path)
		return 2
	}
	failed := 0
	for _, tc := range tf.Tests {
		objs, err := readFile(filepath.Join(filepath.Dir(path), tc.InputPath))
		if err == nil && len(objs) != 1 {
			err = fmt.Errorf("%d objects, want 1", len(objs))
		}
		var res *status.Result
		if err == nil {
			res, err = status.Compute(objs[0])
		}
		switch {
		case err != nil:
			fmt.Printf("FAIL %s: %v\n", tc.InputPath, err)
			failed++
		case res.Status.String() != tc.KStatus.Status ||
			(tc.KStatus.Message != nil && res.Message != *tc.KStatus.Message):
			fmt.Printf("FAIL %s: got %s %q, want %s", tc.InputPath, res.Status, res.Message, tc.KStatus.Status)
			if tc.KStatus.Message != nil {
				fmt.Printf(" %q", *tc.KStatus.Message)
			}
			fmt.Println()
			failed++
		default:
			fmt.Printf("ok   %s: %s %s\n", tc.InputPath, res.Status, res.Message)
		}
	}
	fmt.Printf("kstatus: %d passed, %d failed (%s)\n", len(tf.Tests)-failed, failed, path)
	if failed > 0 {
		return 1
	}
	return 0
}
