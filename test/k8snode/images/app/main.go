// Command app is the test node's workload:
//
//	app sleep            print a line, then sleep until SIGTERM
//	app hog <MiB> [step] allocate and touch <MiB> MiB in <step> MiB chunks
//	                     (default 8) every [pause] ms (default 50), then sleep
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

var keep [][]byte

func main() {
	mode := "sleep"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	fmt.Printf("app start mode=%s pid=%d args=%v\n", mode, os.Getpid(), os.Args)
	if mode == "hog" {
		total, step, pause := 256, 8, 50
		if len(os.Args) > 2 {
			total, _ = strconv.Atoi(os.Args[2])
		}
		if len(os.Args) > 3 {
			step, _ = strconv.Atoi(os.Args[3])
		}
		if len(os.Args) > 4 {
			pause, _ = strconv.Atoi(os.Args[4])
		}
		for got := 0; got < total; got += step {
			b := make([]byte, step<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
			fmt.Printf("allocated %d MiB\n", got+step)
			time.Sleep(time.Duration(pause) * time.Millisecond)
		}
		fmt.Println("hog done, sleeping")
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	t := time.NewTicker(30 * time.Second)
	for {
		select {
		case s := <-c:
			fmt.Printf("got %v, exiting\n", s)
			os.Exit(0)
		case <-t.C:
			fmt.Println("alive", time.Now().Format(time.RFC3339))
		}
	}
}
