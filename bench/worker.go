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
	Cache    int64         `json:"cache_bytes,omitempty"`
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
	k, err := openSubject(j.Subject, j.Dir, j.Layout, j.Cache)
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
	if j.Workload == wlChanges {
		return serveChanges(d, rd, out)
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
	procs := make([]*worker, 0, n)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for i := range n {
		wj := j
		wj.Seed = j.Seed*16 + uint64(i)
		p, err := startWorker(wj)
		if err != nil {
			return result{}, 0, err
		}
		procs = append(procs, p)
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

// worker is a running worker process.
type worker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startWorker starts a worker process and sends it j.
func startWorker(j job) (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$") // the flag keeps a test binary from running tests
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &worker{cmd, in, bufio.NewReader(out)}
	b, _ := json.Marshal(j)
	if _, err := in.Write(append(b, '\n')); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// stop ends the worker, whatever state it is in.
func (p *worker) stop() {
	_ = p.in.Close()         // error deliberately ignored: cleanup
	_ = p.cmd.Process.Kill() // error deliberately ignored: it may have exited
	_ = p.cmd.Wait()         // error deliberately ignored: the result was read or failed
}

// serveChanges is a worker of the cache section: it changes the sessions
// the driver names, one line at a time ("delete I" or "save I V": Save
// payload V over the I-th session of the population), and answers "ok T"
// once the call has returned, T being when it returned (Unix nanoseconds:
// the wall clock is the one clock two processes on a host share).
func serveChanges(d *driver, rd *bufio.Reader, out io.Writer) int {
	for {
		line, err := rd.ReadString('\n')
		if err == io.EOF {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker: reading a change:", err)
			return 2
		}
		var op string
		var i, v int
		n, _ := fmt.Sscan(line, &op, &i, &v)
		if n < 2 || i < 0 || i >= len(d.pop.ids) || v < 0 || v >= len(d.payloads) {
			fmt.Fprintf(os.Stderr, "worker: bad change %q\n", line)
			return 2
		}
		id := d.pop.ids[i]
		switch op {
		case "delete":
			err = d.kv.Delete(id)
		case "save":
			err = d.kv.Save(id, d.payloads[v], d.live)
		default:
			err = fmt.Errorf("unknown change %q", op)
		}
		ack := "ok " + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n"
		if err != nil {
			ack = "error " + err.Error() + "\n"
		}
		if _, err := io.WriteString(out, ack); err != nil {
			return 1
		}
	}
}
