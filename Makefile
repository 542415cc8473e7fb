bench: ## the standard load suite; writes docs/benchmarks.md
	./scripts/bench-suite

test: ## the whole test suite (what CI runs)
	./scripts/test

.PHONY: bench test
