// C ABI over PyTorch's c10d for reg4rec-dist: a TCPStore rendezvous, then ProcessGroupGloo (CPU tensors) or
// ProcessGroupNCCL (CUDA tensors, only when built with -DREG4REC_NCCL). Every entry point catches every C++
// exception and returns its message (a malloc'd string the caller frees with r4d_free_string): nothing here
// may unwind into Rust or abort the process.

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef REG4REC_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world = 1;
  std::chrono::milliseconds timeout{0};
  bool nccl = false;
};

char* dup_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
  }
  return out;
}

// Runs `f`, turning any exception into an error message. Returns 0 on success, 1 on failure.
template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    if (err != nullptr) *err = dup_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    if (err != nullptr) *err = dup_string(e.what());
  } catch (...) {
    if (err != nullptr) *err = dup_string("unknown C++ exception in c10d");
  }
  return 1;
}

std::vector<at::Tensor> tensors_of(void* const* ptrs, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (ptrs[i] == nullptr) throw std::invalid_argument("null tensor");
    out.push_back(*static_cast<at::Tensor*>(ptrs[i]));
  }
  return out;
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, const Group& g) {
  if (!work->wait(g.timeout)) {
    throw std::runtime_error("collective did not complete within the timeout");
  }
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

extern "C" {

void r4d_free_string(char* s) { std::free(s); }

int r4d_nccl_available() {
#ifdef REG4REC_NCCL
  return 1;
#else
  return 0;
#endif
}

// Rendezvous through a TCPStore on master_addr:port (rank 0 hosts it), then creates the backend:
// backend 0 = Gloo, 1 = NCCL. Writes the group to *out.
int r4d_init(const char* master_addr, uint16_t port, int rank, int world, int64_t timeout_ms, int backend,
             void** out, char** err) {
  return guarded(err, [&] {
    if (master_addr == nullptr || out == nullptr) throw std::invalid_argument("null argument");
    if (world < 1 || rank < 0 || rank >= world) {
      throw std::invalid_argument("rank " + std::to_string(rank) + " is not in 0.." + std::to_string(world));
    }
    auto g = std::make_unique<Group>();
    g->rank = rank;
    g->world = world;
    g->timeout = std::chrono::milliseconds(timeout_ms);
    std::string host(master_addr);
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = rank == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = g->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(host, so);
    g->store = c10::make_intrusive<c10d::PrefixStore>("reg4rec", tcp);
    if (backend == 0) {
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(host)) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      opts->threads = 2;
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, world, opts);
    } else if (backend == 1) {
#ifdef REG4REC_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      g->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, rank, world, opts);
      g->nccl = true;
#else
      throw std::runtime_error("reg4rec-dist was built without NCCL (cargo feature `nccl`)");
#endif
    } else {
      throw std::invalid_argument("unknown backend " + std::to_string(backend));
    }
    *out = g.release();
  });
}

void r4d_free(void* group) {
  auto* g = static_cast<Group*>(group);
  if (g == nullptr) return;
  try {
#ifdef REG4REC_NCCL
    if (g->nccl) {
      static_cast<c10d::ProcessGroupNCCL*>(g->backend.get())->shutdown();
    }
#endif
    delete g;
  } catch (...) {
    // Destructors of a broken group may throw; the process keeps going.
  }
}

// In-place all-reduce of each tensor (op 0 = sum, 1 = average). Average is a sum divided by the world size
// (Gloo has no AVG).
int r4d_all_reduce(void* group, void* const* tensors, size_t n, int op, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    if (g == nullptr) throw std::invalid_argument("null group");
    if (op != 0 && op != 1) throw std::invalid_argument("unknown reduce op " + std::to_string(op));
    auto ts = tensors_of(tensors, n);
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      o.timeout = g->timeout;
      wait(g->backend->allreduce(one, o), *g);
      if (op == 1 && g->world > 1) t.div_(g->world);
    }
  });
}

int r4d_broadcast(void* group, void* const* tensors, size_t n, int root, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    if (g == nullptr) throw std::invalid_argument("null group");
    if (root < 0 || root >= g->world) throw std::invalid_argument("root rank " + std::to_string(root) + " out of range");
    auto ts = tensors_of(tensors, n);
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      o.timeout = g->timeout;
      wait(g->backend->broadcast(one, o), *g);
    }
  });
}

int r4d_barrier(void* group, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    if (g == nullptr) throw std::invalid_argument("null group");
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g->backend->barrier(o), *g);
  });
}

}  // extern "C"
