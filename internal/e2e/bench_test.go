package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/api"
	"banger/internal/vmm/qemu"
)

// benchRuns is how many boots each figure is the median of.
const benchRuns = 5

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// BenchmarkVMBoot prints, as medians of benchRuns boots: `vm run` to agent-ready
// and to SSH-ready, next to a bare qemu boot of the same kernel, initramfs and
// rootfs to the same agent-ready signal (banger's overhead is the difference),
// and the host-setup phase with a warm and a cold tap pool. Run it with
// scripts/bench-vm.sh (go test -bench VMBoot -benchtime 1x ./internal/e2e).
func BenchmarkVMBoot(b *testing.B) {
	for b.Loop() {
		warm := benchBanger(b, 4)
		cold := benchBanger(b, 0)
		bare := benchBare(b)

		agentWarm, sshWarm, setupWarm := warm.agent, warm.ssh, warm.setup
		overhead := median(agentWarm) - median(bare)
		fmt.Printf("\nvm boot under %s, medians of %d runs\n", qemu.DetectAccel(qemu.HostPaths{}).Accel, benchRuns)
		fmt.Printf("  bare qemu → agent ready          %8.1f ms\n", ms(median(bare)))
		fmt.Printf("  banger vm run → agent ready      %8.1f ms   (overhead %+.1f ms, %.2fx)\n", ms(median(agentWarm)), ms(overhead), float64(median(agentWarm))/float64(median(bare)))
		fmt.Printf("  banger vm run → ssh ready        %8.1f ms\n", ms(median(sshWarm)))
		fmt.Printf("  host setup, warm tap pool        %8.2f ms\n", ms(median(setupWarm)))
		fmt.Printf("  host setup, cold (no pool)       %8.2f ms\n", ms(median(cold.setup)))
		b.ReportMetric(ms(median(bare)), "bare-agent-ms")
		b.ReportMetric(ms(median(agentWarm)), "banger-agent-ms")
		b.ReportMetric(ms(median(sshWarm)), "banger-ssh-ms")
		b.ReportMetric(ms(median(setupWarm)), "setup-warm-ms")
		b.ReportMetric(ms(median(cold.setup)), "setup-cold-ms")
	}
}

type bootFigures struct{ agent, ssh, setup []time.Duration }

// benchBanger boots benchRuns VMs one after another with a pool of poolSize.
func benchBanger(b *testing.B, poolSize int) bootFigures {
	e := newEnv(b, poolSize)
	var f bootFigures
	for i := range benchRuns {
		name := fmt.Sprintf("bench%d", i)
		out, err := e.banger("vm", "run", "--json", "--name", name, "--memory", "256M", "busybox")
		if err != nil {
			b.Fatalf("vm run: %v\n%s", err, out)
		}
		var v api.VM
		if err := json.Unmarshal([]byte(firstJSON(out)), &v); err != nil || v.Timings == nil {
			b.Fatalf("vm run --json: %v\n%s", err, out)
		}
		tm := v.Timings
		f.agent = append(f.agent, tm.HostSetup+tm.VMMLaunch+tm.AgentReady)
		f.ssh = append(f.ssh, tm.Total)
		f.setup = append(f.setup, tm.HostSetup)
		if out, err := e.banger("vm", "rm", "-f", name); err != nil {
			b.Fatalf("vm rm: %v\n%s", err, out)
		}
		// Let the pool refill, as it would between two user commands.
		e.waitPool(poolSize)
	}
	return f
}

// benchBare boots the default kernel, banger's initramfs and a copy of the image
// with qemu alone, and times it to the agent's first health answer.
func benchBare(b *testing.B) []time.Duration {
	e := newEnv(b, 0)
	var kernels []api.Kernel
	var images []api.Image
	// The default kernel appears on first use: one VM makes it.
	e.banger("vm", "run", "--name", "prime", "--memory", "256M", "busybox")
	e.banger("vm", "rm", "-f", "prime")
	if err := json.Unmarshal([]byte(e.must("kernel", "ls", "--json")), &kernels); err != nil || len(kernels) == 0 {
		b.Fatalf("kernel ls: %v", err)
	}
	if err := json.Unmarshal([]byte(e.must("image", "ls", "--json")), &images); err != nil || len(images) == 0 {
		b.Fatalf("image ls: %v", err)
	}
	khz, _, err := qemu.HostTSCkHz(qemu.HostPaths{})
	if err != nil {
		b.Fatal(err)
	}
	accel := qemu.DetectAccel(qemu.HostPaths{}).Accel
	var out []time.Duration
	for range benchRuns {
		dir := b.TempDir()
		disk := filepath.Join(dir, "root.ext4")
		if o, err := exec.Command("cp", "--sparse=always", images[0].Path, disk).CombinedOutput(); err != nil {
			b.Fatalf("copy image: %v\n%s", err, o)
		}
		sock := filepath.Join(dir, "agent.sock")
		args := []string{
			// the machine and devices the qemu driver uses, so the difference is
			// banger's orchestration alone
			"-M", "microvm,acpi=on,x-option-roms=off,isa-serial=on,rtc=on", "-accel", string(accel), "-cpu", "max", "-m", "256", "-smp", "1",
			"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
			"-kernel", kernels[0].Path, "-initrd", kernels[0].InitrdPath,
			"-append", "console=ttyS0 reboot=t panic=-1 tsc_early_khz=" + strconv.Itoa(khz) + " tsc=reliable root=/dev/vda rw",
			"-drive", "id=root,file=" + disk + ",format=raw,if=none,discard=unmap,cache=writeback,aio=threads", "-device", "virtio-blk-device,drive=root",
			"-device", "virtio-serial-device", "-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name=banger.agent",
			"-serial", "file:" + filepath.Join(dir, "console.log"),
		}
		start := time.Now()
		cmd := exec.Command("qemu-system-x86_64", args...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := waitHealth(sock, 2*time.Minute); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			log, _ := os.ReadFile(filepath.Join(dir, "console.log"))
			b.Fatalf("bare qemu: %v\n%s", err, tail(string(log)))
		}
		out = append(out, time.Since(start))
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return out
}

func waitHealth(sock string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := client.Dial(dctx, conn, client.Options{})
			if err == nil {
				_, err = c.Health(dctx)
				c.Close()
			}
			dcancel()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no agent answer: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
