package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// summarizeScript runs script (ab.sh or pair.sh) with POOL set to a file holding
// lines, as an operator summarizes saved runs, and returns its output.
func summarizeScript(t *testing.T, script, lines string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	f := filepath.Join(t.TempDir(), "runs.txt")
	if err := os.WriteFile(f, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "POOL="+f)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// wantAll fails t for each of wants that script's output lacks.
func wantAll(t *testing.T, script, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("%s summary lacks %q:\n%s", script, want, out)
		}
	}
}

// rounds are six A/B rounds: B costs 0.9× A in five of them, 1.1× in one.
const rounds = `# a header line, ignored
A 10 1000 100
B 9 1100 90
A 20 1000 100
B 18 1100 90
A 10 1000 100
B 11 1100 90
A 10 1000 100
B 9 1100 90
A 10 1000 100
B 9 1100 90
A 10 1000 100
B 9 1100 90
`

func TestABSummary(t *testing.T) {
	out, err := summarizeScript(t, "ab.sh", rounds)
	if err != nil {
		t.Fatalf("ab.sh: %v\n%s", err, out)
	}
	wantAll(t, "ab.sh", out,
		"# 6 rounds: server CPU µs per request or message, medians: A 10.00, B 9.00; ratio of the medians (B/A) 0.900",
		"median 0.900 (95% interval 0.900–1.100)",
		"mean 0.933 ± 0.033 (standard error); B lower in 5 of 6")
}

func TestABSummaryRefusesUnpairedRuns(t *testing.T) {
	// A round that begins with B is not one of ab.sh's rounds.
	out, err := summarizeScript(t, "ab.sh", "B 9 1100 90\nA 10 1000 100\n")
	if err == nil || !strings.Contains(out, "rounds of one") {
		t.Errorf("ab.sh summarized runs that are not A-then-B rounds (err %v):\n%s", err, out)
	}
}

func TestPairSummary(t *testing.T) {
	// pair.sh's ratios are A over B, and a round may run either first.
	out, err := summarizeScript(t, "pair.sh", rounds)
	if err != nil {
		t.Fatalf("pair.sh: %v\n%s", err, out)
	}
	wantAll(t, "pair.sh", out,
		"medians: A 10.00, B 9.00; ratio of the medians 1.111",
		"A over B: median 1.111 (95% interval 0.909–1.111); A lower in 1 of 6")
}
