// Runs one kernel launch on the host: blocks spread over worker threads, the threads of a block as
// fibers on one worker, switched only at barriers (__syncthreads, __syncwarp, shuffles).
//
// Between two barriers a thread runs without interruption, and the runnable threads are resumed in
// the launch's Order (forward, reverse or seeded-random thread index). A correct kernel gives the
// same bits under every order; a missing barrier, or a warp-synchronous assumption, makes one
// thread read a value another has not written yet in some order and not in another. That is the
// race check (runtime.cpp compares the orders).
//
// A finished thread hands its stack to the next one to start, so a kernel that never reaches a
// barrier runs its threads one after another on a single stack: a plain loop with one switch in and
// one out per thread.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "emu.h"
#include "include/cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MTC_ASAN 1
#else
#define MTC_ASAN 0
#endif

namespace mtc_emu {
thread_local ThreadState* cur_thread = nullptr;
thread_local BlockState* cur_block = nullptr;
}  // namespace mtc_emu

extern "C" {
void mtc_emu_switch(void** save_sp, void* new_sp);
void mtc_emu_fiber_start();
void mtc_emu_fiber_main(void* fiber);
}

#if !defined(__x86_64__)
#error "the emulated device's fiber switch is written for x86-64"
#endif

// mtc_emu_switch saves the callee-saved registers on the current stack, stores its pointer in
// *save_sp and restores the same from new_sp. MXCSR and the x87 control word are not switched: no
// kernel changes them, and ldmxcsr per switch was measurable. A new fiber's stack is laid out so
// that the first switch "returns" into mtc_emu_fiber_start with the fiber in rbx.
asm(R"(
    .text
    .globl mtc_emu_switch
    .hidden mtc_emu_switch
    .type mtc_emu_switch, @function
mtc_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mtc_emu_switch, .-mtc_emu_switch

    .globl mtc_emu_fiber_start
    .hidden mtc_emu_fiber_start
    .type mtc_emu_fiber_start, @function
mtc_emu_fiber_start:
    movq %rbx, %rdi
    call mtc_emu_fiber_main@PLT
    ud2
    .size mtc_emu_fiber_start, .-mtc_emu_fiber_start
)");

namespace mtc_emu {
namespace {

// Kernels need a few KiB; ASan's redzones need more.
constexpr size_t kStackSize = MTC_ASAN ? 1024 * 1024 : 64 * 1024;
constexpr size_t kGuard = 4096;
constexpr size_t kTopUnpoison = 32 * 1024;

enum class St : uint8_t { Fresh, Ready, AtBlock, AtWarp, Done };

struct Fiber {
    ThreadState ts;
    void* sp;
    char* stack;
    St st;
    unsigned mask;  // of the warp barrier it waits at
};

struct Worker {
    std::vector<Fiber> fibers;
    std::vector<unsigned> order;
    std::vector<char*> free_stacks;
    std::vector<uint64_t> slots;  // 32 per warp
    std::vector<unsigned> at_warp;    // per warp: lanes waiting at its warp barrier
    std::vector<unsigned> warp_mask;  // per warp: the union of their masks
    BlockState block;
    void* sched_sp = nullptr;
    Fiber* running = nullptr;
    const Launch* launch = nullptr;
    bool failed = false;
    std::string error;
#if MTC_ASAN
    void* sched_fake = nullptr;
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
#endif
};

// One per OS thread, never freed (worker threads live as long as the process).
thread_local Worker* tl_worker = nullptr;

Worker& worker() {
    if (tl_worker == nullptr) tl_worker = new Worker();
    return *tl_worker;
}

char* take_stack(Worker& w) {
    if (!w.free_stacks.empty()) {
        char* s = w.free_stacks.back();
        w.free_stacks.pop_back();
        return s;
    }
    void* p = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    mprotect(p, kGuard, PROT_NONE);  // a thread that overflows its stack faults instead of corrupting
    return static_cast<char*>(p);
}

void give_stack(Worker& w, Fiber& f) {
    if (f.stack != nullptr) w.free_stacks.push_back(f.stack);
    f.stack = nullptr;
}

// Fiber -> scheduler. `dying`: the fiber will never be resumed.
void to_scheduler(Worker& w, Fiber& f, bool dying) {
#if MTC_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, w.sched_bottom, w.sched_size);
#else
    (void)dying;
#endif
    mtc_emu_switch(&f.sp, w.sched_sp);
#if MTC_ASAN
    __sanitizer_finish_switch_fiber(fake, &w.sched_bottom, &w.sched_size);
#endif
}

// Scheduler -> fiber, until it reaches a barrier, finishes or faults.
void resume(Worker& w, Fiber& f) {
    if (f.st == St::Fresh) {
        f.stack = take_stack(w);
        if (f.stack == nullptr) {
            w.failed = true;
            w.error = "no memory for the emulated threads' stacks";
            return;
        }
#if MTC_ASAN
        // A reused stack still carries the poisoned redzones of its last thread's bottom frames
        // (mtc_emu_fiber_main never returns); the kernel's own frames unpoisoned themselves on return.
        // abandon() unpoisons whole stacks of threads that did not finish.
        __asan_unpoison_memory_region(f.stack + kStackSize - kTopUnpoison, kTopUnpoison);
#endif
        const uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackSize) & ~uintptr_t(15);
        // From sp up: r15 r14 r13 r12 rbx rbp, return address. After the `ret`, rsp = top - 16: 16-byte
        // aligned for mtc_emu_fiber_start's call, as the ABI wants.
        uint64_t* sp = reinterpret_cast<uint64_t*>(top - 16 - 56);
        sp[0] = sp[1] = sp[2] = sp[3] = 0;
        sp[4] = reinterpret_cast<uint64_t>(&f);  // rbx: mtc_emu_fiber_start's argument
        sp[5] = 0;
        sp[6] = reinterpret_cast<uint64_t>(&mtc_emu_fiber_start);
        f.sp = sp;
    }
    f.st = St::Ready;
    w.running = &f;
    cur_thread = &f.ts;
#if MTC_ASAN
    __sanitizer_start_switch_fiber(&w.sched_fake, f.stack, kStackSize);
#endif
    mtc_emu_switch(&w.sched_sp, f.sp);
#if MTC_ASAN
    __sanitizer_finish_switch_fiber(w.sched_fake, nullptr, nullptr);
#endif
    w.running = nullptr;
    cur_thread = nullptr;
}

void fail(Worker& w, std::string why) {
    if (!w.failed) {
        w.failed = true;
        w.error = std::move(why);
    }
}

// After thread t reached a warp barrier or finished: releases its warp's barrier when every lane in
// the waiting mask has arrived; a lane in the mask that finished (or does not exist) is an error, as
// it is undefined behaviour on the card. Arrivals are counted, so the lanes are only scanned when the
// count says the barrier may be complete, or when a lane exits.
void check_warp(Worker& w, unsigned t, unsigned n, bool exited) {
    const unsigned warp = t / 32, base = warp * 32;
    const unsigned mask = w.warp_mask[warp];
    if (w.at_warp[warp] == 0 || (!exited && (unsigned)__builtin_popcount(mask) != w.at_warp[warp])) return;
    bool complete = true;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        if (base + l >= n || w.fibers[base + l].st == St::Done) {
            char buf[160];
            snprintf(buf, sizeof buf,
                     "a warp-level operation (shuffle or __syncwarp) with mask 0x%08x waits for lane %u "
                     "of warp %u, which %s",
                     mask, l, warp, base + l >= n ? "does not exist" : "has exited");
            fail(w, buf);
            return;
        }
        if (w.fibers[base + l].st != St::AtWarp) complete = false;
    }
    if (!complete) return;
    for (unsigned l = 0; l < 32; ++l) {
        if (mask >> l & 1u) w.fibers[base + l].st = St::Ready;
    }
    w.at_warp[warp] = 0;
    w.warp_mask[warp] = 0;
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fill_order(Worker& w, unsigned n, Order order, uint64_t seed, uint64_t block, uint64_t phase) {
    w.order.resize(n);
    for (unsigned i = 0; i < n; ++i) w.order[i] = order == Order::Reverse ? n - 1 - i : i;
    if (order == Order::Random) {
        uint64_t s = seed ^ (block * 0xD1B54A32D192ED03ull) ^ (phase * 0x8CB92BA72F3D8DD7ull);
        for (unsigned i = n - 1; i > 0; --i) std::swap(w.order[i], w.order[splitmix(s) % (i + 1)]);
    }
}

void abandon(Worker& w, unsigned n) {
    for (unsigned t = 0; t < n; ++t) {
#if MTC_ASAN
        if (w.fibers[t].stack != nullptr)
            __asan_unpoison_memory_region(w.fibers[t].stack + kGuard, kStackSize - kGuard);
#endif
        give_stack(w, w.fibers[t]);
    }
}

// Runs one block to completion; false (with w.error) when it failed.
bool run_block(Worker& w, const Launch& l, uint64_t linear) {
    const unsigned bx = l.block[0], by = l.block[1], bz = l.block[2];
    const unsigned n = bx * by * bz;
    w.block.idx = {unsigned(linear % l.grid[0]), unsigned(linear / l.grid[0] % l.grid[1]),
                   unsigned(linear / (uint64_t(l.grid[0]) * l.grid[1]))};
    w.block.dim = {bx, by, bz};
    w.block.grid = {l.grid[0], l.grid[1], l.grid[2]};
    cur_block = &w.block;
    w.fibers.resize(n);
    w.slots.assign(size_t(n + 31) / 32 * 32, 0);
    w.at_warp.assign((n + 31) / 32, 0);
    w.warp_mask.assign((n + 31) / 32, 0);
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = w.fibers[t];
        f.ts.idx = {t % bx, t / bx % by, t / (bx * by)};
        f.ts.lane = t & 31u;
        f.st = St::Fresh;
        f.stack = nullptr;
        f.mask = 0;
    }
    unsigned live = n;
    for (uint64_t phase = 0; live > 0; ++phase) {
        fill_order(w, n, l.order, l.seed, linear, phase);
        bool ran = false;
        for (unsigned t : w.order) {
            Fiber& f = w.fibers[t];
            if (f.st != St::Fresh && f.st != St::Ready) continue;
            resume(w, f);
            ran = true;
            if (!w.failed && f.st == St::Done) {
                --live;
                give_stack(w, f);
                check_warp(w, t, n, true);
            } else if (!w.failed && f.st == St::AtWarp) {
                ++w.at_warp[t / 32];
                w.warp_mask[t / 32] |= f.mask;
                check_warp(w, t, n, false);
            }
            if (w.failed) {
                abandon(w, n);
                return false;
            }
        }
        if (ran || live == 0) continue;
        // Nobody could run: every live thread waits. Only a block-wide barrier may release them.
        for (unsigned t = 0; t < n; ++t) {
            if (w.fibers[t].st == St::AtWarp) {
                fail(w, "deadlock: threads wait at a warp barrier (shuffle/__syncwarp) while others of "
                        "their warp wait at __syncthreads (barrier in divergent code)");
                abandon(w, n);
                return false;
            }
        }
        for (unsigned t = 0; t < n; ++t) {
            if (w.fibers[t].st == St::AtBlock) w.fibers[t].st = St::Ready;
        }
    }
    return true;
}

// The worker threads: they wait for a launch, take blocks from a shared counter, and report done.
struct Pool {
    std::mutex m;
    std::condition_variable wake, idle;
    const Launch* job = nullptr;
    uint64_t generation = 0;
    unsigned busy = 0;
    std::atomic<uint64_t> next{0};
    uint64_t total = 0;
    std::atomic<bool> failed{false};
    std::string error;
    unsigned threads = 1;
};

void work(Pool& p, const Launch& l) {
    Worker& w = worker();
    w.launch = &l;
    for (uint64_t b; !p.failed.load(std::memory_order_relaxed) && (b = p.next.fetch_add(1)) < p.total;) {
        w.failed = false;
        w.error.clear();
        if (!run_block(w, l, b)) {
            std::lock_guard<std::mutex> g(p.m);
            if (!p.failed.exchange(true)) {
                const BlockState& bs = w.block;
                char where[96];
                snprintf(where, sizeof where, " (block %u,%u,%u)", bs.idx.x, bs.idx.y, bs.idx.z);
                p.error = w.error + where;
            }
        }
    }
    cur_block = nullptr;
    w.launch = nullptr;
}

Pool& pool() {
    static Pool* p = [] {
        Pool* q = new Pool();  // never destroyed: its threads outlive static destructors
        unsigned n = std::thread::hardware_concurrency();
        if (const char* env = getenv("MTCOOL_EMU_THREADS")) n = (unsigned)atoi(env);
        q->threads = std::max(1u, n);
        for (unsigned i = 1; i < q->threads; ++i) {
            std::thread([q] {
                // Worker threads must not take the process's signals.
                sigset_t all;
                sigfillset(&all);
                pthread_sigmask(SIG_BLOCK, &all, nullptr);
                uint64_t seen = 0;
                for (;;) {
                    std::unique_lock<std::mutex> g(q->m);
                    q->wake.wait(g, [&] { return q->generation != seen; });
                    seen = q->generation;
                    const Launch* l = q->job;
                    g.unlock();
                    work(*q, *l);
                    g.lock();
                    if (--q->busy == 0) q->idle.notify_all();
                }
            }).detach();
        }
        return q;
    }();
    return *p;
}

}  // namespace

std::string execute(const Launch& l) {
    Pool& p = pool();
    const uint64_t total = uint64_t(l.grid[0]) * l.grid[1] * l.grid[2];
    {
        std::lock_guard<std::mutex> g(p.m);
        p.job = &l;
        p.total = total;
        p.next = 0;
        p.failed = false;
        p.error.clear();
        // Small grids run on the calling thread alone.
        p.busy = total > 1 ? p.threads - 1 : 0;
        if (p.busy > 0) ++p.generation;
    }
    if (p.busy > 0) p.wake.notify_all();
    work(p, l);
    std::unique_lock<std::mutex> g(p.m);
    p.idle.wait(g, [&] { return p.busy == 0; });
    return p.failed ? p.error : std::string();
}

void block_barrier() {
    Worker& w = *tl_worker;
    Fiber& f = *w.running;
    f.st = St::AtBlock;
    to_scheduler(w, f, false);
}

void warp_barrier(unsigned mask) {
    Worker& w = *tl_worker;
    Fiber& f = *w.running;
    if (!(mask >> f.ts.lane & 1u)) fault("a warp-level operation whose mask does not include the calling lane");
    f.mask = mask;
    f.st = St::AtWarp;
    to_scheduler(w, f, false);
}

uint64_t* warp_slots() {
    Worker& w = *tl_worker;
    const size_t t = size_t(w.running - w.fibers.data());
    return &w.slots[t & ~size_t(31)];
}

void fault(const char* what) {
    Worker& w = *tl_worker;
    if (w.running == nullptr) {
        fprintf(stderr, "mtcool-emu: %s (outside a kernel)\n", what);
        abort();
    }
    fail(w, what);
    to_scheduler(w, *w.running, true);
    __builtin_unreachable();
}

}  // namespace mtc_emu

extern "C" void mtc_emu_fiber_main(void* arg) {
    using namespace mtc_emu;
    Fiber* f = static_cast<Fiber*>(arg);
    Worker& w = *tl_worker;
#if MTC_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w.sched_bottom, &w.sched_size);
#endif
    w.launch->k->invoke(w.launch->k->fn, w.launch->params);
    f->st = St::Done;
    to_scheduler(w, *f, true);
    __builtin_unreachable();
}
