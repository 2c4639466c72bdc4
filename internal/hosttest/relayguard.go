package hosttest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var build struct {
	once sync.Once
	bin  string
	err  error
	out  []byte
}

// Relayguard builds the relayguard binary once per test process and
// returns its path.
func Relayguard(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		dir, err := os.MkdirTemp("", "rg-bin-")
		if err != nil {
			build.err = err
			return
		}
		os.Chmod(dir, 0o755)
		build.bin = filepath.Join(dir, "relayguard")
		build.out, build.err = exec.Command(goBin, "build", "-o", build.bin, "github.com/relayguard/relayguard/cmd/relayguard").CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("go build relayguard: %v\n%s", build.err, build.out)
	}
	return build.bin
}

// Proc is a running relayguard command.
type Proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

// Start runs `relayguard args...` inside namespace ns ("": the host's)
// until the test ends (then it gets SIGINT), logging its output to the
// test log, and waits until a line of its output matches ready.
func Start(t testing.TB, ns string, ready string, args ...string) *Proc {
	t.Helper()
	cmd := Command(ns, Relayguard(t), args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	re := regexp.MustCompile(ready)
	readyc := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if !sent && re.MatchString(line) {
				sent = true
				close(readyc)
			}
		}
		pr.Close()
		cmd.Wait()
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("relayguard %s output:\n%s", strings.Join(args, " "), p.Output())
		}
	})
	select {
	case <-readyc:
	case <-p.done:
		t.Fatalf("relayguard %s exited before it was ready:\n%s", strings.Join(args, " "), p.Output())
	case <-time.After(90 * time.Second):
		t.Fatalf("relayguard %s not ready:\n%s", strings.Join(args, " "), p.Output())
	}
	return p
}

// Output returns everything the process wrote so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitOutput waits until the output matches every pattern.
func (p *Proc) WaitOutput(t testing.TB, patterns ...string) string {
	t.Helper()
	var s string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		s = p.Output()
		ok := true
		for _, pat := range patterns {
			if !regexp.MustCompile(pat).MatchString(s) {
				ok = false
				break
			}
		}
		if ok {
			return s
		}
	}
	t.Fatalf("relayguard output lacks %q:\n%s", patterns, s)
	return ""
}

// Stop interrupts the process and waits for it.
func (p *Proc) Stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(os.Interrupt)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}
