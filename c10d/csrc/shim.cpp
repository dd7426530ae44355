// The C ABI between the `c10d` crate and libtorch's distributed engine: a TCPStore for the
// rendezvous and a ProcessGroupGloo for the collectives, both the implementations inside
// libtorch_cpu.so (nothing here moves bytes itself). Every entry point catches C++
// exceptions and hands their message back to Rust, which cannot unwind through C++.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  int rank;
  int world;
  std::chrono::milliseconds timeout;
};

void set_error(char* err, size_t len, const std::string& message) {
  if (err == nullptr || len == 0) return;
  size_t n = message.size() < len - 1 ? message.size() : len - 1;
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

// Runs `body`, turning any exception into a message and a non-zero return.
template <typename F>
int guarded(char* err, size_t len, F body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return 1;
}

void wait_for(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  // wait() rethrows the collective's error (a closed connection, Gloo's timeout).
  work->wait(timeout);
}

}  // namespace

extern "C" {

// Connects to (or, with `is_server`, serves) the TCPStore at `host:port`, then builds the
// Gloo process group of `world` ranks; `timeout_ms` bounds the rendezvous and every
// collective. `prefix` namespaces the keys (a launcher's store outlives one attempt).
// `ifname`, when not empty, picks the network interface Gloo binds to. NULL on error.
void* c10d_group_new(const char* host, uint16_t port, int rank, int world, int is_server,
                     const char* prefix, const char* ifname, int64_t timeout_ms, char* err,
                     size_t err_len) {
  Group* out = nullptr;
  guarded(err, err_len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = world;
    // Gloo's full-mesh connect waits for every rank (bounded by the timeout); the store
    // waiting for its workers as well would count clients that the PrefixStore hides.
    opts.waitWorkers = false;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    store->setTimeout(timeout);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string iface(ifname);
    options->devices.push_back(iface.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                             : c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    // One thread suffices for one collective at a time, and leaves the cores to training.
    options->threads = 1;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    out = new Group{store, pg, rank, world, timeout};
  });
  return out;
}

void c10d_group_free(void* group) { delete static_cast<Group*>(group); }

// Sums the (contiguous, CPU) tensor `tensor` (a tch C_tensor, i.e. an at::Tensor*) over
// all ranks, in place.
int c10d_all_reduce_sum(void* group, void* tensor, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    wait_for(g->pg->allreduce(tensors, opts), g->timeout);
  });
}

// Overwrites `tensor` on every rank with `root`'s.
int c10d_broadcast(void* group, void* tensor, int root, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    wait_for(g->pg->broadcast(tensors, opts), g->timeout);
  });
}

// Returns when every rank has called it.
int c10d_barrier(void* group, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    wait_for(g->pg->barrier(opts), g->timeout);
  });
}

// After a failed collective: says "failed" under this rank's key, waits `grace_ms` for the
// other survivors to do the same, and writes into `lost` (world bytes) 1 for each rank that
// did not. Returns non-zero (message in err) when the store itself is unreachable.
int c10d_find_lost(void* group, int64_t grace_ms, uint8_t* lost, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* g = static_cast<Group*>(group);
    std::string mine = "failed/" + std::to_string(g->rank);
    g->store->set(mine, std::vector<uint8_t>{1});
    std::this_thread::sleep_for(std::chrono::milliseconds(grace_ms));
    for (int r = 0; r < g->world; ++r) {
      lost[r] = g->store->check({"failed/" + std::to_string(r)}) ? 0 : 1;
    }
  });
}

}  // extern "C"
