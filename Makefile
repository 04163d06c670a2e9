# Convenience targets; scripts/ hold the real steps so CI and humans run the same thing.
.PHONY: build test lint fmt vet staticcheck bench quickstart

build:
	scripts/build.sh

test:
	scripts/test.sh

lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi

vet:
	go vet ./...

staticcheck:
	staticcheck ./...

bench:
	scripts/bench.sh

quickstart:
	scripts/quickstart.sh
