package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// workerEnv, when set in the environment, makes the binary a worker
// process of a multi-process run instead of the benchmark driver.
const workerEnv = "FILESTORE_BENCH_WORKER"

// job is what the driver asks a worker to do, sent as one JSON line on the
// worker's stdin.
type job struct {
	Subject  string        `json:"subject"`
	Dir      string        `json:"dir"`
	Layout   string        `json:"layout"`
	Pop      int           `json:"pop"`
	Payload  int           `json:"payload"`
	Workload string        `json:"workload"`
	Dur      time.Duration `json:"dur"`
	MaxOps   int64         `json:"max_ops"`
	Seed     uint64        `json:"seed"`
}

// workerMain is a worker process: it reads a job, opens its subject,
// prints "ready", waits for "go" so that every worker starts at once, runs
// the job and prints the result as JSON.
func workerMain(in io.Reader, out io.Writer) int {
	rd := bufio.NewReader(in)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker: reading job:", err)
		return 2
	}
	var j job
	if err := json.Unmarshal(line, &j); err != nil {
		fmt.Fprintln(os.Stderr, "worker: bad job:", err)
		return 2
	}
	k, err := openSubject(j.Subject, j.Dir, j.Layout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker: open:", err)
		return 1
	}
	defer k.Close()
	d := newDriver(k, newPopulation(j.Pop), payloads(j.Payload), j.Seed, "w"+strconv.FormatUint(j.Seed, 10))
	fmt.Fprintln(out, "ready")
	if _, err := rd.ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "worker: waiting for go:", err)
		return 2
	}
	res := d.run(j.Workload, j.Dur, j.MaxOps)
	if err := json.NewEncoder(out).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "worker: writing result:", err)
		return 1
	}
	return 0
}

// runWorkers runs j in n worker processes started together, and returns
// their merged result. Ops per second add up; Elapsed is the longest.
func runWorkers(j job, n int) (result, float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return result{}, 0, err
	}
	type proc struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	procs := make([]proc, 0, n)
	defer func() {
		for _, p := range procs {
			_ = p.in.Close()         // error deliberately ignored: cleanup
			_ = p.cmd.Process.Kill() // error deliberately ignored: it may have exited
			_ = p.cmd.Wait()         // error deliberately ignored: the result was read or failed
		}
	}()
	for i := range n {
		cmd := exec.Command(exe, "-test.run=^$") // the flag keeps a test binary from running tests
		cmd.Env = append(os.Environ(), workerEnv+"=1")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return result{}, 0, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return result{}, 0, err
		}
		if err := cmd.Start(); err != nil {
			return result{}, 0, err
		}
		procs = append(procs, proc{cmd, in, bufio.NewReader(out)})
		wj := j
		wj.Seed = j.Seed*16 + uint64(i)
		b, _ := json.Marshal(wj)
		if _, err := in.Write(append(b, '\n')); err != nil {
			return result{}, 0, err
		}
	}
	for _, p := range procs {
		line, err := p.out.ReadString('\n')
		if err != nil || line != "ready\n" {
			return result{}, 0, fmt.Errorf("worker did not start: %q %v", line, err)
		}
	}
	for _, p := range procs {
		if _, err := io.WriteString(p.in, "go\n"); err != nil {
			return result{}, 0, err
		}
	}
	var total result
	var rate float64
	for _, p := range procs {
		var r result
		if err := json.NewDecoder(p.out).Decode(&r); err != nil {
			return result{}, 0, fmt.Errorf("worker result: %w", err)
		}
		if r.Elapsed <= 0 {
			return result{}, 0, errors.New("worker reported no elapsed time")
		}
		rate += float64(r.Ops) / r.Elapsed.Seconds()
		total.merge(&r)
	}
	return total, rate, nil
}
