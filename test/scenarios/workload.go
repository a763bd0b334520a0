package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// The workload processes of the scenarios: this binary re-executed as
// `scenarios work <mode> <args...>` inside a scenario cgroup.
//
//	hold MiB                          allocate MiB, hold until killed (the critical workload)
//	leak initMiB stepMiB everyMs      allocate initMiB, then stepMiB every everyMs, forever
//	spike baseMiB afterMs burstMiB    hold baseMiB; after afterMs allocate burstMiB at once
//	alloc MiB holdMs                  allocate MiB as fast as possible, hold holdMs, exit 0
//	read FILE                         stream FILE sequentially, over and over
const mib = 1 << 20

var held [][]byte

// touch allocates n MiB and writes every page so it is resident.
func touch(n int) {
	for i := 0; i < n; i++ {
		b := make([]byte, mib)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(j)
		}
		held = append(held, b)
	}
}

func runWork(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "work: want a mode")
		return 2
	}
	nums := make([]int, 0, len(args)-1)
	if args[0] != "read" {
		for _, a := range args[1:] {
			n, err := strconv.Atoi(a)
			if err != nil || n < 0 {
				fmt.Fprintf(os.Stderr, "work %s: bad argument %q\n", args[0], a)
				return 2
			}
			nums = append(nums, n)
		}
	}
	want := map[string]int{"hold": 1, "leak": 3, "spike": 3, "alloc": 2, "read": 1}
	if n, ok := want[args[0]]; !ok || len(args)-1 != n {
		fmt.Fprintf(os.Stderr, "work: unknown mode or wrong arguments: %q\n", args)
		return 2
	}
	switch args[0] {
	case "hold":
		touch(nums[0])
		select {}
	case "leak":
		touch(nums[0])
		for {
			time.Sleep(time.Duration(nums[2]) * time.Millisecond)
			touch(nums[1])
		}
	case "spike":
		touch(nums[0])
		time.Sleep(time.Duration(nums[1]) * time.Millisecond)
		touch(nums[2])
		select {}
	case "alloc":
		touch(nums[0])
		time.Sleep(time.Duration(nums[1]) * time.Millisecond)
		return 0
	case "read":
		buf := make([]byte, mib)
		for {
			f, err := os.Open(args[1])
			if err != nil {
				fmt.Fprintln(os.Stderr, "work read:", err)
				return 1
			}
			_, err = io.CopyBuffer(io.Discard, readerOnly{f}, buf)
			f.Close()
			if err != nil {
				fmt.Fprintln(os.Stderr, "work read:", err)
				return 1
			}
		}
	}
	return 2
}

// readerOnly hides WriteTo so CopyBuffer uses the given buffer.
type readerOnly struct{ io.Reader }
