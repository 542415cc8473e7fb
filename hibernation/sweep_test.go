package hibernation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/filestore"
)

// fakeRoom is a room in memory of fakeRooms.
type fakeRoom struct {
	name    string
	parked  bool
	unsaved bool
	last    time.Time
}

// fakeRooms implements Rooms as the runtime does, with one lock for all
// rooms: Visit and Revisit run the decision under it and evict there, and
// only what they are told. It records what the Sweeper asked for.
type fakeRooms struct {
	mu      sync.Mutex
	rooms   map[string]*fakeRoom
	reasons map[string]Reason // evicted rooms and why
	batches [][]string        // the rooms of each Evicted call
	saves   []string          // Save calls, in order
	visits  int
	// afterVisit runs when Visit has released the lock: it stands for
	// the events that reach rooms between a pass and the re-check.
	afterVisit func(f *fakeRooms)

	// The start-up wake: rooms Wake started run for a second, then park.
	hosts   map[string]bool
	woken   []storage.Room
	running int
	most    int   // the most rooms running at once
	wakeErr error // returned by Wake once set
}

func newFakeRooms() *fakeRooms {
	return &fakeRooms{rooms: map[string]*fakeRoom{}, reasons: map[string]Reason{}}
}

// add puts a parked room in memory whose last event ended at last.
func (f *fakeRooms) add(name string, last time.Time, unsaved bool) *fakeRoom {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &fakeRoom{name: name, parked: true, unsaved: unsaved, last: last}
	f.rooms[name] = r
	return r
}

func (f *fakeRooms) state(r *fakeRoom) State {
	if !r.parked {
		return State{}
	}
	return State{Parked: true, Unsaved: r.unsaved, LastActive: r.last}
}

// evict is the runtime's eviction; the caller holds f.mu.
func (f *fakeRooms) evict(r *fakeRoom, why Reason) {
	if !r.parked || f.rooms[r.name] != r {
		panic(fmt.Sprintf("room %s evicted while running or gone", r.name))
	}
	delete(f.rooms, r.name)
	f.reasons[r.name] = why
}

func (f *fakeRooms) Visit(decide func(*fakeRoom, State) Reason) {
	f.mu.Lock()
	f.visits++
	for _, name := range slices.Sorted(maps.Keys(f.rooms)) {
		r := f.rooms[name]
		if why := decide(r, f.state(r)); why != Keep {
			f.evict(r, why)
		}
	}
	f.mu.Unlock()
	if f.afterVisit != nil {
		f.afterVisit(f)
	}
}

func (f *fakeRooms) Revisit(r *fakeRoom, decide func(*fakeRoom, State) Reason) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rooms[r.name] != r {
		return
	}
	if why := decide(r, f.state(r)); why != Keep {
		f.evict(r, why)
	}
}

func (f *fakeRooms) Evicted(rooms []*fakeRoom) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, r := range rooms {
		names = append(names, r.name)
	}
	f.batches = append(f.batches, names)
}

// Save stands for the room running to save its records and parking again;
// a save does not make the room look used.
func (f *fakeRooms) Save(r *fakeRoom) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.saves = append(f.saves, r.name)
	r.unsaved = false
}

func (f *fakeRooms) InMemory() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rooms)
}

func (f *fakeRooms) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

func (f *fakeRooms) Hosts(class string) bool { return f.hosts[class] }

func (f *fakeRooms) Wake(r storage.Room) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wakeErr != nil {
		return f.wakeErr
	}
	f.woken = append(f.woken, r)
	f.running++
	f.most = max(f.most, f.running)
	time.AfterFunc(time.Second, func() { // the room parks a second after its last event
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	})
	return nil
}

// snapshot returns, under the lock, what the Sweeper asked for so far.
func (f *fakeRooms) snapshot() (reasons map[string]Reason, saves []string, visits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.reasons), slices.Clone(f.saves), f.visits
}

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestSweepEvictsIdleParkedRooms(t *testing.T) {
	f := newFakeRooms()
	f.add("idle", t0.Add(-10*time.Second), false)
	f.add("recent", t0.Add(-9*time.Second), false)
	f.add("running", t0.Add(-time.Hour), false).parked = false
	s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: 10 * time.Second}})

	if more := s.sweep(t0); more {
		t.Error("sweep held saves back with none to make")
	}
	if want := map[string]Reason{"idle": Idle}; !maps.Equal(f.reasons, want) {
		t.Errorf("evicted %v, want %v", f.reasons, want)
	}
	if want := [][]string{{"idle"}}; !slices.EqualFunc(f.batches, want, slices.Equal) {
		t.Errorf("Evicted calls %v, want %v", f.batches, want)
	}
	if len(f.saves) > 0 {
		t.Errorf("saves %v, want none", f.saves)
	}
	s.sweep(t0)
	if len(f.batches) != 1 {
		t.Errorf("%d Evicted calls after a sweep that evicted nothing, want 1", len(f.batches))
	}
}

func TestSweepSavesBeforeEvicting(t *testing.T) {
	f := newFakeRooms()
	f.add("unsaved", t0.Add(-time.Minute), true)
	f.add("unsaved-recent", t0.Add(-time.Second), true) // not idle, no pressure: saved later
	s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: 10 * time.Second}})

	s.sweep(t0)
	if len(f.reasons) > 0 {
		t.Fatalf("evicted %v with unsaved records", f.reasons)
	}
	if want := []string{"unsaved"}; !slices.Equal(f.saves, want) {
		t.Fatalf("saves %v, want %v", f.saves, want)
	}
	// The save committed and the room parked again, as idle as before.
	s.sweep(t0)
	if want := map[string]Reason{"unsaved": Idle}; !maps.Equal(f.reasons, want) {
		t.Fatalf("evicted %v after the save, want %v", f.reasons, want)
	}
	if len(f.saves) != 1 {
		t.Fatalf("saves %v, want one", f.saves)
	}
}

func TestSweepCapsSaves(t *testing.T) {
	const n = maxSavesPerSweep + 5
	f := newFakeRooms()
	for i := range n {
		f.add(fmt.Sprintf("r%04d", i), t0.Add(-time.Hour), true)
	}
	s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: 10 * time.Second}})

	if more := s.sweep(t0); !more {
		t.Error("sweep did not report the saves it held back")
	}
	if len(f.saves) != maxSavesPerSweep || len(f.reasons) > 0 {
		t.Fatalf("first sweep: %d saves, %d evictions; want %d, 0", len(f.saves), len(f.reasons), maxSavesPerSweep)
	}
	if more := s.sweep(t0); more {
		t.Error("second sweep held saves back")
	}
	if len(f.saves) != n || len(f.reasons) != maxSavesPerSweep {
		t.Fatalf("second sweep: %d saves, %d evictions; want %d, %d", len(f.saves), len(f.reasons), n, maxSavesPerSweep)
	}
	s.sweep(t0)
	if len(f.reasons) != n || len(f.saves) != n {
		t.Fatalf("third sweep: %d evictions, %d saves; want %d of each", len(f.reasons), len(f.saves), n)
	}
}

// Past the cap the least recently used parked rooms go, down to 90% of
// it, counting the idle rooms the same sweep evicted.
func TestSweepEvictsLeastRecentUnderPressure(t *testing.T) {
	f := newFakeRooms()
	for i := range 20 { // r00 is the least recent
		f.add(fmt.Sprintf("r%02d", i), t0.Add(-time.Minute+time.Duration(i)*time.Second), false)
	}
	f.add("idle", t0.Add(-2*time.Hour), false)
	f.add("running", t0.Add(-time.Hour), false).parked = false
	f.add("unsaved", t0.Add(-50*time.Minute), true)
	// 23 in memory, one idle: 22 after the pass, 13 over 90% of 10.
	s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: time.Hour, MaxActive: 10}})

	s.sweep(t0)
	want := map[string]Reason{"idle": Idle}
	for i := range 13 {
		want[fmt.Sprintf("r%02d", i)] = Pressure
	}
	if !maps.Equal(f.reasons, want) {
		t.Errorf("evicted %v, want %v", f.reasons, want)
	}
	if want := []string{"unsaved"}; !slices.Equal(f.saves, want) {
		t.Errorf("saves %v, want %v: under pressure records are saved before they are due", f.saves, want)
	}
	if len(f.batches) != 1 || len(f.batches[0]) != 14 {
		t.Errorf("Evicted calls %v, want one with the sweep's 14 rooms", f.batches)
	}
}

// A room picked at the pass is evicted for pressure only if it is still
// the same parked room with nothing unsaved.
func TestSweepRechecksBeforePressureEviction(t *testing.T) {
	f := newFakeRooms()
	for i := range 20 {
		f.add(fmt.Sprintf("r%02d", i), t0.Add(-time.Minute+time.Duration(i)*time.Second), false)
	}
	f.afterVisit = func(f *fakeRooms) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.rooms["r00"].parked = false                                                   // woke and runs
		f.rooms["r01"].unsaved = true                                                   // woke, took a socket, parked again
		delete(f.rooms, "r02")                                                          // left memory
		f.rooms["r03"] = &fakeRoom{name: "r03", parked: true, last: t0.Add(-time.Hour)} // built again
		f.afterVisit = nil
	}
	s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: time.Hour, MaxActive: 10}})

	s.sweep(t0)
	// 19 in memory after the pass: 10 over 90% of the cap, from the ten
	// least recent at the pass, of which four changed meanwhile.
	want := map[string]Reason{}
	for i := 4; i < 10; i++ {
		want[fmt.Sprintf("r%02d", i)] = Pressure
	}
	if !maps.Equal(f.reasons, want) {
		t.Errorf("evicted %v, want %v", f.reasons, want)
	}
}

func TestRunTicksWithPolicy(t *testing.T) {
	tests := []struct {
		name  string
		after time.Duration
		tick  time.Duration
	}{
		{"a quarter of After", 2 * time.Second, 500 * time.Millisecond},
		{"at least every second", time.Hour, time.Second},
		{"at most every 10 ms", 20 * time.Millisecond, 10 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeRooms()
				s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: tc.after}})
				stop := runSweeper(t, s)
				defer stop()
				visits := func() int { _, _, v := f.snapshot(); return v }
				time.Sleep(tc.tick - time.Millisecond)
				synctest.Wait()
				if v := visits(); v != 0 {
					t.Fatalf("%d sweeps before the first tick", v)
				}
				time.Sleep(time.Millisecond)
				synctest.Wait()
				if v := visits(); v != 1 {
					t.Fatalf("%d sweeps at the first tick, want 1", v)
				}
				time.Sleep(tc.tick)
				synctest.Wait()
				if v := visits(); v != 2 {
					t.Fatalf("%d sweeps at the second tick, want 2", v)
				}
			})
		})
	}
}

// A sweep that held saves back is followed by another 100 ms later, not
// at the next tick.
func TestRunSweepsAgainWhileSavesWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = maxSavesPerSweep + 6
		f := newFakeRooms()
		for i := range n {
			f.add(fmt.Sprintf("r%04d", i), time.Now().Add(-2*time.Hour), true)
		}
		s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: time.Hour}}) // a tick a second
		stop := runSweeper(t, s)
		defer stop()

		time.Sleep(time.Second)
		synctest.Wait()
		if evicted, saves, _ := f.snapshot(); len(saves) != maxSavesPerSweep || len(evicted) != 0 {
			t.Fatalf("at the tick: %d saves, %d evictions; want %d, 0", len(saves), len(evicted), maxSavesPerSweep)
		}
		time.Sleep(saveWait)
		synctest.Wait()
		if evicted, saves, _ := f.snapshot(); len(saves) != n || len(evicted) != maxSavesPerSweep {
			t.Fatalf("100 ms later: %d saves, %d evictions; want %d, %d", len(saves), len(evicted), n, maxSavesPerSweep)
		}
		time.Sleep(time.Second - saveWait)
		synctest.Wait()
		if evicted, _, visits := f.snapshot(); len(evicted) != n || visits != 3 {
			t.Fatalf("at the next tick: %d evictions in %d sweeps; want %d in 3", len(evicted), visits, n)
		}
	})
}

// Added past the cap sweeps at once, at most once per 100 ms; below the
// cap it waits for the tick.
func TestRunSweepsOnPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRooms()
		add := func(from, to int) {
			for i := from; i < to; i++ {
				f.add(fmt.Sprintf("r%02d", i), time.Now().Add(time.Duration(i-100)*time.Second), false)
			}
		}
		add(0, 20)
		s := NewSweeper[*fakeRoom](f, Options{Policy: Policy{After: time.Hour, MaxActive: 10}}) // a tick a second
		stop := runSweeper(t, s)
		defer stop()
		check := func(when string, sweeps, inMemory int) {
			t.Helper()
			synctest.Wait()
			if _, _, v := f.snapshot(); v != sweeps || f.InMemory() != inMemory {
				t.Fatalf("%s: %d sweeps, %d rooms in memory; want %d, %d", when, v, f.InMemory(), sweeps, inMemory)
			}
		}

		s.Added(10)
		check("at the cap", 0, 20)
		s.Added(20)
		check("past the cap", 1, 9)
		time.Sleep(10 * time.Millisecond)
		add(20, 25)
		s.Added(14)
		check("10 ms later", 1, 14)
		time.Sleep(100 * time.Millisecond)
		s.Added(14)
		check("110 ms later", 2, 9)
	})
}

// runSweeper runs s until the returned func stops it.
func runSweeper(t *testing.T, s *Sweeper[*fakeRoom]) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// openStore returns a new filestore.
func openStore(t *testing.T) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill gives each room in s one member when members is set, else one key.
func fill(t *testing.T, s storage.Store, rooms []storage.Room, members bool) {
	t.Helper()
	errs := make(chan error, len(rooms))
	for _, r := range rooms {
		b := &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("v")}}}
		if members {
			b = &storage.Batch{Members: []storage.Member{{ID: 1, Data: (&Member{ID: 1}).Encode()}}}
		}
		s.Commit(context.Background(), r, b, func(err error) { errs <- err })
	}
	for range rooms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func roomsNamed(class string, n int) []storage.Room {
	rs := make([]storage.Room, n)
	for i := range rs {
		rs[i] = storage.Room{Class: class, Name: fmt.Sprintf("r%04d", i)}
	}
	return rs
}

// WakeLost wakes every room with members of a class the runtime runs,
// page after page, and only those.
func TestWakeLostWakesRoomsWithMembers(t *testing.T) {
	want := roomsNamed("chat", 1200) // more than two pages
	store := openStore(t)
	fill(t, store, want, true)
	fill(t, store, roomsNamed("gone", 3), true) // a class the runtime no longer runs
	fill(t, store, []storage.Room{{Class: "chat", Name: "r0500x"}}, false)
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRooms()
		f.hosts = map[string]bool{"chat": true}
		s := NewSweeper[*fakeRoom](f, Options{Store: store, StartupWakes: 10000})
		if err := s.WakeLost(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(f.woken, want) {
			t.Fatalf("woke %d rooms, want the %d chat rooms with members in order", len(f.woken), len(want))
		}
		time.Sleep(time.Second) // let the rooms park
	})
}

// At most StartupWakes rooms run at once: the next wake waits for a room
// to park.
func TestWakeLostPacesWakes(t *testing.T) {
	store := openStore(t)
	fill(t, store, roomsNamed("chat", 10), true)
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRooms()
		f.hosts = map[string]bool{"chat": true}
		s := NewSweeper[*fakeRoom](f, Options{Store: store, StartupWakes: 3})
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // should the test fail early
		done := make(chan error, 1)
		go func() { done <- s.WakeLost(ctx) }()
		woken := func() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.woken) }

		synctest.Wait()
		if n := woken(); n != 3 {
			t.Fatalf("%d rooms woken at once, want 3", n)
		}
		time.Sleep(time.Second - time.Millisecond)
		synctest.Wait()
		if n := woken(); n != 3 {
			t.Fatalf("%d rooms woken before the first ones parked, want 3", n)
		}
		time.Sleep(wakePoll + time.Millisecond)
		synctest.Wait()
		if n := woken(); n != 6 {
			t.Fatalf("%d rooms woken once the first ones parked, want 6", n)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); woken() != 10 || f.most != 3 || took < 3*time.Second || took > 3*time.Second+3*wakePoll {
			t.Fatalf("%d rooms woken in %v, at most %d at once; want 10 in about 3s, at most 3", woken(), took, f.most)
		}
		time.Sleep(time.Second)
	})
}

func TestWakeLostStops(t *testing.T) {
	store := openStore(t)
	fill(t, store, roomsNamed("chat", 10), true)
	t.Run("when ctx ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeRooms()
			f.hosts = map[string]bool{"chat": true}
			s := NewSweeper[*fakeRoom](f, Options{Store: store, StartupWakes: 1})
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if err := s.WakeLost(ctx); err != nil {
				t.Fatal(err)
			}
			if len(f.woken) != 1 {
				t.Fatalf("%d rooms woken, want 1", len(f.woken))
			}
			time.Sleep(time.Second)
		})
	})
	t.Run("when the runtime refuses a wake", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeRooms()
			f.hosts = map[string]bool{"chat": true}
			f.wakeErr = errors.New("draining")
			s := NewSweeper[*fakeRoom](f, Options{Store: store})
			if err := s.WakeLost(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(f.woken) != 0 {
				t.Fatalf("%d rooms woken, want 0", len(f.woken))
			}
		})
	})
	t.Run("when the store fails", func(t *testing.T) {
		store.Close()
		f := newFakeRooms()
		s := NewSweeper[*fakeRoom](f, Options{Store: store})
		if err := s.WakeLost(context.Background()); !errors.Is(err, storage.ErrClosed) {
			t.Fatalf("WakeLost = %v, want ErrClosed", err)
		}
	})
}
