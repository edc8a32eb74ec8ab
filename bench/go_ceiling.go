// The HTTP stack's ceiling in `make bench`: Go's net/http answering GET /loyalty/healthz with
// the same JSON as loyalty's bare endpoint, and nothing else. Built and started by
// bench/benchlib/goceiling.py; measured by the same wrk run as our bare endpoint.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
)

func main() {
	port := flag.Int("port", 0, "TCP port to listen on, on 127.0.0.1")
	flag.Parse()
	body := []byte(`{"status":"Success"}`)
	length := strconv.Itoa(len(body))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /loyalty/healthz", func(w http.ResponseWriter, _ *http.Request) {
		header := w.Header()
		header.Set("Content-Type", "application/json")
		header.Set("Content-Length", length)
		_, _ = w.Write(body)
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+strconv.Itoa(*port), mux))
}
