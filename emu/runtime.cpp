// The CUDA driver API of the emulated device: the calls cudarc 0.19.10 makes (../shared/DESIGN.md
// section 8), exported under their exact names from a library called libcuda.so.1, so that an
// unchanged binary uses it when the loader finds it first (LD_LIBRARY_PATH).
//
// One device, "mtcool-emu" (H100-like attributes). Device memory is host memory: every allocation is
// its own malloc block (so the AddressSanitizer build puts a redzone after each), filled with 0xFF
// bytes (NaN as f32 and f64) so reads of never-written memory show. Streams run their work at issue
// time, which is one legal order of execution: an async host-to-device copy has read its source when
// it returns, a device-to-host copy is complete. Stream capture records launches, copies and
// memsets into a graph that cuGraphLaunch replays. Calls outside that subset answer
// CUDA_ERROR_NOT_SUPPORTED and say so on stderr.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"

#define MTC_API extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_ILLEGAL_STATE = 401,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    CUDA_ERROR_STREAM_CAPTURE_UNMATCHED = 903,
    CUDA_ERROR_UNKNOWN = 999,
};

namespace {
using mtc_emu::KernelDef;
using mtc_emu::Order;

const char kDeviceName[] = "mtcool-emu (emulated H100 on the CPU; not a GPU)";
const unsigned kFatbinMagic = 0xBA55ED50u;
const char kGroupTag[] = "MTCOOL-EMU-GROUP:";  // after the fatbin header: a group other than "product"

struct Context {
    int refs = 0;
};
struct Event;
struct Node {
    enum Kind { Kernel, Copy, Memset, Record } kind;
    Event* event = nullptr;  // Record: the event stamped when the graph reaches this node
    const KernelDef* k = nullptr;
    unsigned grid[3] = {}, block[3] = {};
    std::vector<std::vector<char>> args;
    char* dst = nullptr;
    const char* src = nullptr;
    size_t bytes = 0;
    unsigned char value = 0;
};
struct Graph {
    std::vector<Node> nodes;
};
struct Stream {
    bool capturing = false;
    int mode = 0;  // CUstreamCaptureMode: 0 global, 1 thread-local, 2 relaxed
    Graph* graph = nullptr;
};
struct Event {
    unsigned flags = 0;
    bool recorded = false;
    double ms = 0;
};
struct Module {
    std::string group;
};

struct Config {
    std::string schedule = "forward";  // forward | reverse | random | check
    uint64_t seed = 1;
    uint64_t mem_limit = 80ull << 30;
    std::string report;
    std::string fail_kernel;  // test hook: launches of this kernel fail with CUDA_ERROR_LAUNCH_FAILED
    Config() {
        if (const char* s = getenv("MTCOOL_EMU_FAIL_KERNEL")) fail_kernel = s;
        if (const char* s = getenv("MTCOOL_EMU_SCHEDULE")) schedule = s;
        if (const char* s = getenv("MTCOOL_EMU_SEED")) seed = strtoull(s, nullptr, 10);
        if (const char* s = getenv("MTCOOL_EMU_MEM_LIMIT")) mem_limit = strtoull(s, nullptr, 10);
        if (const char* s = getenv("MTCOOL_EMU_REPORT")) report = s;
        if (schedule != "forward" && schedule != "reverse" && schedule != "random" && schedule != "check") {
            fprintf(stderr, "mtcool-emu: MTCOOL_EMU_SCHEDULE=%s is not one of forward, reverse, random, check; using check\n",
                    schedule.c_str());
            schedule = "check";
        }
    }
};

struct Stats {
    uint64_t live_allocs, live_bytes, peak_bytes, alloc_calls, free_calls, launches, races, bytes_htod,
        bytes_dtoh;
};

struct State {
    std::mutex m;  // guards everything below and serialises launches
    bool initialised = false;
    Context primary;
    Stream legacy;  // the NULL / legacy / per-thread default streams
    std::map<uintptr_t, size_t> allocs;
    Stats stats{};
    Config cfg;
    int capturing_strict = 0;  // streams capturing in global or thread-local mode
};

State& st() {
    static State* s = new State();  // never destroyed: cudarc may free memory from static destructors
    return *s;
}

thread_local Context* tl_ctx = nullptr;

CUresult say(CUresult code, const std::string& what) {
    fprintf(stderr, "mtcool-emu: %s\n", what.c_str());
    return code;
}

CUresult unsupported(const char* call) {
    return say(CUDA_ERROR_NOT_SUPPORTED, std::string(call) + " is not implemented by the emulated device");
}

Stream* stream_of(void* h) {
    // 0, CU_STREAM_LEGACY (1) and CU_STREAM_PER_THREAD (2) are the default stream.
    return reinterpret_cast<uintptr_t>(h) <= 2 ? &st().legacy : static_cast<Stream*>(h);
}

// The allocation holding [p, p + bytes), or allocs.end().
std::map<uintptr_t, size_t>::iterator find_alloc(uintptr_t p, size_t bytes) {
    auto& a = st().allocs;
    auto it = a.upper_bound(p);
    if (it == a.begin()) return a.end();
    --it;
    if (p < it->first || p + bytes > it->first + it->second || p + bytes < p) return a.end();
    return it;
}

CUresult check_range(uintptr_t p, size_t bytes, const char* call) {
    if (find_alloc(p, bytes) != st().allocs.end()) return CUDA_SUCCESS;
    char buf[200];
    snprintf(buf, sizeof buf, "%s: [0x%lx, +%zu bytes) is not inside one device allocation", call,
             (unsigned long)p, bytes);
    return say(CUDA_ERROR_INVALID_VALUE, buf);
}

double now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

Order order_of(const std::string& s) {
    return s == "reverse" ? Order::Reverse : s == "random" ? Order::Random : Order::Forward;
}

// Runs a launch. In "check" mode it runs three times, from the same memory, in forward, reverse and
// random thread order, and fails with CUDA_ERROR_LAUNCH_FAILED when the bytes written differ.
CUresult run_kernel(const KernelDef* k, const unsigned grid[3], const unsigned block[3], void** params) {
    State& s = st();
    ++s.stats.launches;
    if (!s.cfg.fail_kernel.empty() && s.cfg.fail_kernel == k->name)
        return say(CUDA_ERROR_LAUNCH_FAILED, std::string("kernel ") + k->name + ": failed on purpose (MTCOOL_EMU_FAIL_KERNEL)");
    std::vector<std::pair<uintptr_t, size_t>> touched;
    std::vector<int> touched_arg;  // the first argument pointing into each
    for (int i = 0; i < k->nargs; ++i) {
        if (!k->arg_is_ptr[i]) continue;
        uintptr_t p;
        memcpy(&p, params[i], sizeof p);
        if (p == 0) continue;
        auto it = find_alloc(p, 0);
        if (it == s.allocs.end()) {
            char buf[200];
            snprintf(buf, sizeof buf, "kernel %s: argument %d (0x%lx) points into no device allocation", k->name,
                     i, (unsigned long)p);
            return say(CUDA_ERROR_ILLEGAL_ADDRESS, buf);
        }
        bool seen = false;
        for (auto& t : touched) seen = seen || t.first == it->first;
        if (!seen) {
            touched.emplace_back(it->first, it->second);
            touched_arg.push_back(i);
        }
    }
    mtc_emu::Launch l{k, params, {grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]}, Order::Forward,
                      s.cfg.seed + s.stats.launches};
    auto fail = [&](const std::string& why) {
        return say(CUDA_ERROR_LAUNCH_FAILED, std::string("kernel ") + k->name + ": " + why);
    };
    if (s.cfg.schedule != "check") {
        l.order = order_of(s.cfg.schedule);
        std::string err = mtc_emu::execute(l);
        return err.empty() ? CUDA_SUCCESS : fail(err);
    }
    std::vector<std::vector<char>> before, first;
    for (auto& t : touched) {
        const char* p = reinterpret_cast<const char*>(t.first);
        before.emplace_back(p, p + t.second);
    }
    const Order orders[3] = {Order::Forward, Order::Reverse, Order::Random};
    const char* names[3] = {"forward", "reverse", "random"};
    for (int o = 0; o < 3; ++o) {
        if (o > 0) {
            for (size_t i = 0; i < touched.size(); ++i) memcpy(reinterpret_cast<char*>(touched[i].first), before[i].data(), touched[i].second);
        }
        l.order = orders[o];
        std::string err = mtc_emu::execute(l);
        if (!err.empty()) return fail(err + " [" + names[o] + " thread order]");
        for (size_t i = 0; i < touched.size(); ++i) {
            const char* p = reinterpret_cast<const char*>(touched[i].first);
            if (o == 0) {
                first.emplace_back(p, p + touched[i].second);
                continue;
            }
            if (memcmp(p, first[i].data(), touched[i].second) == 0) continue;
            size_t at = 0;
            while (p[at] == first[i][at]) ++at;
            ++s.stats.races;
            char buf[300];
            snprintf(buf, sizeof buf,
                     "race: the %s and forward thread orders write different bytes (the buffer of argument %d, "
                     "byte %zu of %zu): a missing __syncthreads/__syncwarp, or threads writing the same address",
                     names[o], touched_arg[i], at, touched[i].second);
            return fail(buf);
        }
    }
    return CUDA_SUCCESS;
}

CUresult run_node(const Node& n) {
    switch (n.kind) {
        case Node::Kernel: {
            std::vector<void*> params;
            for (auto& a : n.args) params.push_back(const_cast<char*>(a.data()));
            return run_kernel(n.k, n.grid, n.block, params.data());
        }
        case Node::Copy:
            memmove(n.dst, n.src, n.bytes);
            return CUDA_SUCCESS;
        case Node::Memset:
            memset(n.dst, n.value, n.bytes);
            return CUDA_SUCCESS;
        case Node::Record:
            n.event->recorded = true;
            n.event->ms = now_ms();
            return CUDA_SUCCESS;
    }
    return CUDA_ERROR_UNKNOWN;
}

// Runs `n` now, or appends it to the stream's graph while the stream is capturing.
CUresult issue(void* stream, Node n) {
    Stream* s = stream_of(stream);
    if (s->capturing) {
        s->graph->nodes.push_back(std::move(n));
        return CUDA_SUCCESS;
    }
    return run_node(n);
}

CUresult copy(char* dst, const char* src, size_t bytes, void* stream) {
    Node n;
    n.kind = Node::Copy;
    n.dst = dst;
    n.src = src;
    n.bytes = bytes;
    return issue(stream, std::move(n));
}

CUresult memset_bytes(CUdeviceptr dst, unsigned char v, size_t bytes, void* stream, const char* call) {
    if (CUresult r = check_range(dst, bytes, call)) return r;
    Node n;
    n.kind = Node::Memset;
    n.dst = reinterpret_cast<char*>(dst);
    n.bytes = bytes;
    n.value = v;
    return issue(stream, std::move(n));
}

#define REQUIRE_INIT()                                                 \
    do {                                                               \
        if (!st().initialised) return CUDA_ERROR_NOT_INITIALIZED;      \
    } while (0)
#define LOCK() std::lock_guard<std::mutex> lock_(st().m)

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Initialisation, device, context

MTC_API CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    st().initialised = true;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDriverGetVersion(int* v) {
    if (v == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *v = 13000;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDeviceGetCount(int* n) {
    REQUIRE_INIT();
    if (n == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *n = 1;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    REQUIRE_INIT();
    if (d == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    REQUIRE_INIT();
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", kDeviceName);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    REQUIRE_INIT();
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *bytes = st().cfg.mem_limit;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) {
    REQUIRE_INIT();
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (uuid == nullptr) return CUDA_ERROR_INVALID_VALUE;
    memcpy(uuid, "mtcool-emu-dev-0", 16);
    return CUDA_SUCCESS;
}
MTC_API CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }

MTC_API CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    REQUIRE_INIT();
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (v == nullptr) return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
        case 1: *v = 1024; break;                // MAX_THREADS_PER_BLOCK
        case 2: case 3: *v = 1024; break;        // MAX_BLOCK_DIM_X, Y
        case 4: *v = 64; break;                  // MAX_BLOCK_DIM_Z
        case 5: *v = 2147483647; break;          // MAX_GRID_DIM_X
        case 6: case 7: *v = 65535; break;       // MAX_GRID_DIM_Y, Z
        case 8: *v = 48 * 1024; break;           // MAX_SHARED_MEMORY_PER_BLOCK
        case 9: *v = 64 * 1024; break;           // TOTAL_CONSTANT_MEMORY
        case 10: *v = 32; break;                 // WARP_SIZE
        case 12: *v = 65536; break;              // MAX_REGISTERS_PER_BLOCK
        case 13: *v = 1980000; break;            // CLOCK_RATE (kHz)
        case 16: *v = 132; break;                // MULTIPROCESSOR_COUNT
        case 31: *v = 1; break;                  // CONCURRENT_KERNELS
        case 36: *v = 2619000; break;            // MEMORY_CLOCK_RATE (kHz)
        case 37: *v = 5120; break;               // GLOBAL_MEMORY_BUS_WIDTH
        case 38: *v = 50 * 1024 * 1024; break;   // L2_CACHE_SIZE
        case 39: *v = 2048; break;               // MAX_THREADS_PER_MULTIPROCESSOR
        case 41: *v = 1; break;                  // UNIFIED_ADDRESSING
        case 75: *v = 9; break;                  // COMPUTE_CAPABILITY_MAJOR
        case 76: *v = 0; break;                  // COMPUTE_CAPABILITY_MINOR
        case 81: *v = 228 * 1024; break;         // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        case 82: *v = 65536; break;              // MAX_REGISTERS_PER_MULTIPROCESSOR
        case 97: *v = 227 * 1024; break;         // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 106: *v = 32; break;                // MAX_BLOCKS_PER_MULTIPROCESSOR
        case 115: *v = 0; break;                 // MEMORY_POOLS_SUPPORTED: cudarc uses cuMemAlloc
        default:
            return say(CUDA_ERROR_NOT_SUPPORTED,
                       "cuDeviceGetAttribute: attribute " + std::to_string(attr) + " is not emulated");
    }
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice d) {
    REQUIRE_INIT();
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (ctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    ++st().primary.refs;
    *ctx = &st().primary;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    REQUIRE_INIT();
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    LOCK();
    if (st().primary.refs <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    --st().primary.refs;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuCtxGetCurrent(void** ctx) {
    REQUIRE_INIT();
    if (ctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *ctx = tl_ctx;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuCtxSetCurrent(void* ctx) {
    REQUIRE_INIT();
    if (ctx != nullptr && ctx != &st().primary) return CUDA_ERROR_INVALID_CONTEXT;
    tl_ctx = static_cast<Context*>(ctx);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuCtxSynchronize() {
    REQUIRE_INIT();
    return tl_ctx == nullptr ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------
// Memory

MTC_API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    REQUIRE_INIT();
    if (p == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    State& s = st();
    if (s.capturing_strict > 0)
        return say(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuMemAlloc_v2 while a stream is capturing (not relaxed mode)");
    if (s.stats.live_bytes + bytes > s.cfg.mem_limit || s.stats.live_bytes + bytes < bytes) return CUDA_ERROR_OUT_OF_MEMORY;
    void* mem = nullptr;
    if (posix_memalign(&mem, 256, bytes) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    memset(mem, 0xFF, bytes);  // NaN bytes: reads of never-written memory show up as NaN
    s.allocs[reinterpret_cast<uintptr_t>(mem)] = bytes;
    ++s.stats.alloc_calls;
    ++s.stats.live_allocs;
    s.stats.live_bytes += bytes;
    if (s.stats.live_bytes > s.stats.peak_bytes) s.stats.peak_bytes = s.stats.live_bytes;
    *p = reinterpret_cast<CUdeviceptr>(mem);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuMemFree_v2(CUdeviceptr p) {
    REQUIRE_INIT();
    LOCK();
    State& s = st();
    if (s.capturing_strict > 0)
        return say(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuMemFree_v2 while a stream is capturing (not relaxed mode)");
    auto it = s.allocs.find(p);
    if (it == s.allocs.end()) return say(CUDA_ERROR_INVALID_VALUE, "cuMemFree_v2 of a pointer that is not an allocation");
    ++s.stats.free_calls;
    --s.stats.live_allocs;
    s.stats.live_bytes -= it->second;
    free(reinterpret_cast<void*>(p));
    s.allocs.erase(it);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    REQUIRE_INIT();
    if (free_bytes == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    *total = st().cfg.mem_limit;
    *free_bytes = st().cfg.mem_limit - st().stats.live_bytes;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void* stream) {
    REQUIRE_INIT();
    LOCK();
    return memset_bytes(p, v, n, stream, "cuMemsetD8Async");
}
MTC_API CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
    REQUIRE_INIT();
    LOCK();
    return memset_bytes(p, v, n, nullptr, "cuMemsetD8_v2");
}

MTC_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, void* stream) {
    REQUIRE_INIT();
    LOCK();
    if (CUresult r = check_range(dst, bytes, "cuMemcpyHtoDAsync_v2")) return r;
    st().stats.bytes_htod += bytes;
    return copy(reinterpret_cast<char*>(dst), static_cast<const char*>(src), bytes, stream);
}
MTC_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    return cuMemcpyHtoDAsync_v2(dst, src, bytes, nullptr);
}

MTC_API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, void* stream) {
    REQUIRE_INIT();
    LOCK();
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoHAsync_v2")) return r;
    st().stats.bytes_dtoh += bytes;
    return copy(static_cast<char*>(dst), reinterpret_cast<const char*>(src), bytes, stream);
}
MTC_API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    return cuMemcpyDtoHAsync_v2(dst, src, bytes, nullptr);
}

MTC_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void* stream) {
    REQUIRE_INIT();
    LOCK();
    if (CUresult r = check_range(dst, bytes, "cuMemcpyDtoDAsync_v2")) return r;
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoDAsync_v2")) return r;
    return copy(reinterpret_cast<char*>(dst), reinterpret_cast<const char*>(src), bytes, stream);
}
MTC_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    return cuMemcpyDtoDAsync_v2(dst, src, bytes, nullptr);
}

// ---------------------------------------------------------------------------------------------------
// Streams and events

MTC_API CUresult cuStreamCreate(void** s, unsigned flags) {
    REQUIRE_INIT();
    if (s == nullptr || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    *s = new Stream();
    return CUDA_SUCCESS;
}

MTC_API CUresult cuStreamDestroy_v2(void* h) {
    REQUIRE_INIT();
    if (reinterpret_cast<uintptr_t>(h) <= 2) return CUDA_ERROR_INVALID_HANDLE;
    LOCK();
    Stream* s = static_cast<Stream*>(h);
    if (s->capturing) {
        if (s->mode != 2) --st().capturing_strict;
        delete s->graph;
    }
    delete s;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuStreamSynchronize(void* h) {
    REQUIRE_INIT();
    LOCK();
    if (stream_of(h)->capturing)
        return say(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuStreamSynchronize on a capturing stream");
    return CUDA_SUCCESS;  // its work ran when it was issued
}

MTC_API CUresult cuStreamQuery(void* h) { return cuStreamSynchronize(h); }

MTC_API CUresult cuStreamWaitEvent(void* h, void* ev, unsigned flags) {
    REQUIRE_INIT();
    if (ev == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
    (void)h;
    return CUDA_SUCCESS;  // every stream runs in issue order on one timeline
}

MTC_API CUresult cuEventCreate(void** ev, unsigned flags) {
    REQUIRE_INIT();
    if (ev == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Event* e = new Event();
    e->flags = flags;
    *ev = e;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuEventDestroy_v2(void* ev) {
    REQUIRE_INIT();
    if (ev == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    delete static_cast<Event*>(ev);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuEventRecord(void* ev, void* stream) {
    REQUIRE_INIT();
    if (ev == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    LOCK();
    // The stream's earlier work is done (it ran at issue time), so the event is stamped now, or, in a
    // capture, when a launch of the graph reaches it.
    Node n;
    n.kind = Node::Record;
    n.event = static_cast<Event*>(ev);
    return issue(stream, std::move(n));
}

MTC_API CUresult cuEventSynchronize(void* ev) {
    REQUIRE_INIT();
    return ev == nullptr ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

MTC_API CUresult cuEventQuery(void* ev) { return cuEventSynchronize(ev); }

MTC_API CUresult cuEventElapsedTime_v2(float* ms, void* start, void* end) {
    REQUIRE_INIT();
    if (ms == nullptr || start == nullptr || end == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    const Event* a = static_cast<Event*>(start);
    const Event* b = static_cast<Event*>(end);
    if ((a->flags | b->flags) & 2u) return CUDA_ERROR_INVALID_HANDLE;  // CU_EVENT_DISABLE_TIMING
    if (!a->recorded || !b->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *ms = float(b->ms - a->ms);
    return CUDA_SUCCESS;
}
MTC_API CUresult cuEventElapsedTime(float* ms, void* start, void* end) { return cuEventElapsedTime_v2(ms, start, end); }

// ---------------------------------------------------------------------------------------------------
// Modules and launches

MTC_API CUresult cuModuleLoadData(void** module, const void* image) {
    REQUIRE_INIT();
    if (module == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
    unsigned magic;
    memcpy(&magic, image, 4);
    if (magic != kFatbinMagic)
        return say(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: not a fatbin (the emulated device runs the kernels "
                                             "compiled into it, and loads only nvcc fatbins; no PTX JIT)");
    // Header: u32 magic, u16 version, u16 header size, u64 payload size.
    unsigned short header;
    memcpy(&header, static_cast<const char*>(image) + 6, 2);
    const char* payload = static_cast<const char*>(image) + header;
    Module* m = new Module();
    m->group = "product";
    if (strncmp(payload, kGroupTag, sizeof kGroupTag - 1) == 0) m->group = payload + sizeof kGroupTag - 1;
    *module = m;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuModuleUnload(void* module) {
    REQUIRE_INIT();
    if (module == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    delete static_cast<Module*>(module);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuModuleGetFunction(void** f, void* module, const char* name) {
    REQUIRE_INIT();
    if (f == nullptr || module == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const std::string& group = static_cast<Module*>(module)->group;
    for (size_t i = 0; i < mtc_emu::kRegistryLen; ++i) {
        const KernelDef& k = mtc_emu::kRegistry[i];
        if (group == k.group && strcmp(k.name, name) == 0) {
            *f = const_cast<KernelDef*>(&k);
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_NOT_FOUND;
}

MTC_API CUresult cuFuncGetAttribute(int* v, int attr, void* f) {
    REQUIRE_INIT();
    if (v == nullptr || f == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const KernelDef* k = static_cast<const KernelDef*>(f);
    switch (attr) {
        case 0: *v = (int)k->max_threads; return CUDA_SUCCESS;  // MAX_THREADS_PER_BLOCK
        case 1: case 2: case 3: case 4: *v = 0; return CUDA_SUCCESS;  // shared, const, local bytes, regs
        default: return say(CUDA_ERROR_NOT_SUPPORTED, "cuFuncGetAttribute: attribute " + std::to_string(attr) + " is not emulated");
    }
}

MTC_API CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                unsigned shared, void* stream, void** params, void** extra) {
    REQUIRE_INIT();
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    const KernelDef* k = static_cast<const KernelDef*>(f);
    if (extra != nullptr) return say(CUDA_ERROR_NOT_SUPPORTED, "cuLaunchKernel: `extra` argument packing is not emulated");
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535)
        return CUDA_ERROR_INVALID_VALUE;
    if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || uint64_t(bx) * by * bz > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    if (uint64_t(bx) * by * bz > k->max_threads) return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    if (shared > 48 * 1024) return CUDA_ERROR_INVALID_VALUE;
    if (shared > 0) return say(CUDA_ERROR_NOT_SUPPORTED, "cuLaunchKernel: dynamic shared memory is not emulated");
    if (params == nullptr && k->nargs > 0) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    Node n;
    n.kind = Node::Kernel;
    n.k = k;
    const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    memcpy(n.grid, grid, sizeof grid);
    memcpy(n.block, block, sizeof block);
    if (stream_of(stream)->capturing) {
        for (int i = 0; i < k->nargs; ++i) {
            const char* a = static_cast<const char*>(params[i]);
            n.args.emplace_back(a, a + k->arg_sizes[i]);
        }
        stream_of(stream)->graph->nodes.push_back(std::move(n));
        return CUDA_SUCCESS;
    }
    return run_kernel(k, grid, block, params);
}

// ---------------------------------------------------------------------------------------------------
// Stream capture and graphs

MTC_API CUresult cuStreamBeginCapture_v2(void* h, int mode) {
    REQUIRE_INIT();
    if (reinterpret_cast<uintptr_t>(h) <= 2)
        return say(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuStreamBeginCapture_v2 on the default stream");
    if (mode < 0 || mode > 2) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    Stream* s = static_cast<Stream*>(h);
    if (s->capturing) return CUDA_ERROR_ILLEGAL_STATE;
    s->capturing = true;
    s->mode = mode;
    s->graph = new Graph();
    if (mode != 2) ++st().capturing_strict;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuStreamEndCapture(void* h, void** graph) {
    REQUIRE_INIT();
    if (graph == nullptr) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    Stream* s = stream_of(h);
    if (!s->capturing) return CUDA_ERROR_STREAM_CAPTURE_UNMATCHED;
    s->capturing = false;
    if (s->mode != 2) --st().capturing_strict;
    *graph = s->graph;
    s->graph = nullptr;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuStreamIsCapturing(void* h, int* status) {
    REQUIRE_INIT();
    if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
    LOCK();
    *status = stream_of(h)->capturing ? 1 : 0;
    return CUDA_SUCCESS;
}

MTC_API CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags) {
    REQUIRE_INIT();
    if (exec == nullptr || graph == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (flags != 0) return say(CUDA_ERROR_NOT_SUPPORTED, "cuGraphInstantiateWithFlags: flags are not emulated");
    *exec = new Graph(*static_cast<Graph*>(graph));
    return CUDA_SUCCESS;
}

MTC_API CUresult cuGraphLaunch(void* exec, void* stream) {
    REQUIRE_INIT();
    if (exec == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    LOCK();
    if (stream_of(stream)->capturing) return say(CUDA_ERROR_NOT_SUPPORTED, "cuGraphLaunch into a capturing stream");
    for (const Node& n : static_cast<Graph*>(exec)->nodes) {
        if (CUresult r = run_node(n)) return r;
    }
    return CUDA_SUCCESS;
}

MTC_API CUresult cuGraphUpload(void* exec, void* stream) {
    REQUIRE_INIT();
    (void)stream;
    return exec == nullptr ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;  // nothing to stage on the host
}

MTC_API CUresult cuGraphExecDestroy(void* exec) {
    REQUIRE_INIT();
    delete static_cast<Graph*>(exec);
    return CUDA_SUCCESS;
}

MTC_API CUresult cuGraphDestroy(void* graph) {
    REQUIRE_INIT();
    delete static_cast<Graph*>(graph);
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------
// Errors

namespace {
struct ErrorText {
    int code;
    const char* name;
    const char* text;
};
const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "operation failed due to a previous error during capture"},
    {CUDA_ERROR_STREAM_CAPTURE_UNMATCHED, "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED", "capture was not initiated in this stream"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};
const ErrorText* error_text(int code) {
    for (const ErrorText& e : kErrors)
        if (e.code == code) return &e;
    return nullptr;
}
}  // namespace

MTC_API CUresult cuGetErrorName(CUresult code, const char** out) {
    if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* e = error_text(code);
    *out = e ? e->name : nullptr;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

MTC_API CUresult cuGetErrorString(CUresult code, const char** out) {
    if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* e = error_text(code);
    *out = e ? e->text : nullptr;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---------------------------------------------------------------------------------------------------
// Accounting, for tests: what is allocated now, at most, and in how many calls.

struct MtcEmuStats {
    uint64_t live_allocs, live_bytes, peak_bytes, alloc_calls, free_calls, launches, races, bytes_htod, bytes_dtoh;
};
static_assert(sizeof(MtcEmuStats) == sizeof(Stats), "one layout");

MTC_API int mtcemu_stats(MtcEmuStats* out) {
    if (out == nullptr) return 1;
    LOCK();
    memcpy(out, &st().stats, sizeof *out);
    return 0;
}

__attribute__((destructor)) static void write_report() {
    State& s = st();
    if (s.cfg.report.empty()) return;
    FILE* f = fopen(s.cfg.report.c_str(), "w");
    if (f == nullptr) return;
    const Stats& t = s.stats;
    fprintf(f,
            "{\"live_allocs\": %llu, \"live_bytes\": %llu, \"peak_bytes\": %llu, \"alloc_calls\": %llu, "
            "\"free_calls\": %llu, \"launches\": %llu, \"races\": %llu, \"bytes_htod\": %llu, \"bytes_dtoh\": %llu, "
            "\"schedule\": \"%s\"}\n",
            (unsigned long long)t.live_allocs, (unsigned long long)t.live_bytes, (unsigned long long)t.peak_bytes,
            (unsigned long long)t.alloc_calls, (unsigned long long)t.free_calls, (unsigned long long)t.launches,
            (unsigned long long)t.races, (unsigned long long)t.bytes_htod, (unsigned long long)t.bytes_dtoh,
            s.cfg.schedule.c_str());
    fclose(f);
}

// ---------------------------------------------------------------------------------------------------
// The rest of what cudarc can call: present (a missing symbol would make cudarc panic), not emulated.

#define MTC_UNSUPPORTED(name) \
    MTC_API CUresult name(...) { return unsupported(#name); }
MTC_UNSUPPORTED(cuCtxCreate_v3)
MTC_UNSUPPORTED(cuCtxCreate_v4)
MTC_UNSUPPORTED(cuCtxDestroy_v2)
MTC_UNSUPPORTED(cuCtxGetCacheConfig)
MTC_UNSUPPORTED(cuCtxGetLimit)
MTC_UNSUPPORTED(cuCtxGetStreamPriorityRange)
MTC_UNSUPPORTED(cuCtxSetCacheConfig)
MTC_UNSUPPORTED(cuCtxSetFlags)
MTC_UNSUPPORTED(cuCtxSetLimit)
MTC_UNSUPPORTED(cuDestroyExternalMemory)
MTC_UNSUPPORTED(cuDeviceGetDefaultMemPool)
MTC_UNSUPPORTED(cuDeviceGetMemPool)
MTC_UNSUPPORTED(cuDeviceSetMemPool)
MTC_UNSUPPORTED(cuExternalMemoryGetMappedBuffer)
MTC_UNSUPPORTED(cuFuncSetAttribute)
MTC_UNSUPPORTED(cuFuncSetCacheConfig)
MTC_UNSUPPORTED(cuImportExternalMemory)
MTC_UNSUPPORTED(cuLaunchCooperativeKernel)
MTC_UNSUPPORTED(cuLaunchHostFunc)
MTC_UNSUPPORTED(cuLaunchKernelEx)
MTC_UNSUPPORTED(cuMemAdvise_v2)
MTC_UNSUPPORTED(cuMemAllocAsync)
MTC_UNSUPPORTED(cuMemAllocFromPoolAsync)
MTC_UNSUPPORTED(cuMemAllocManaged)
MTC_UNSUPPORTED(cuMemFreeAsync)
MTC_UNSUPPORTED(cuMemFreeHost)
MTC_UNSUPPORTED(cuMemHostAlloc)
MTC_UNSUPPORTED(cuMemPoolCreate)
MTC_UNSUPPORTED(cuMemPoolDestroy)
MTC_UNSUPPORTED(cuMemPoolGetAttribute)
MTC_UNSUPPORTED(cuMemPoolSetAttribute)
MTC_UNSUPPORTED(cuMemPoolTrimTo)
MTC_UNSUPPORTED(cuMemPrefetchAsync_v2)
MTC_UNSUPPORTED(cuMemcpyPeerAsync)
MTC_UNSUPPORTED(cuModuleGetGlobal_v2)
MTC_UNSUPPORTED(cuModuleLoad)
MTC_UNSUPPORTED(cuOccupancyAvailableDynamicSMemPerBlock)
MTC_UNSUPPORTED(cuOccupancyMaxActiveBlocksPerMultiprocessor)
MTC_UNSUPPORTED(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags)
MTC_UNSUPPORTED(cuOccupancyMaxActiveClusters)
MTC_UNSUPPORTED(cuOccupancyMaxPotentialBlockSize)
MTC_UNSUPPORTED(cuOccupancyMaxPotentialBlockSizeWithFlags)
MTC_UNSUPPORTED(cuOccupancyMaxPotentialClusterSize)
MTC_UNSUPPORTED(cuProfilerStart)
MTC_UNSUPPORTED(cuProfilerStop)
MTC_UNSUPPORTED(cuStreamAttachMemAsync)
MTC_UNSUPPORTED(cuStreamCreateWithPriority)
