// A fixed pool of worker threads running one parallel_for at a time. The calling thread takes part,
// so a pool of n threads starts n−1 workers.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kpig {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Execution setting of the kernels run on this pool (one pool per model): matmul inputs rounded
  // to bfloat16, float32 accumulation.
  bool matmul_bf16 = false;
  // Runs fn(task, thread) for task in [0, n_tasks), tasks handed out dynamically; blocks until all
  // finish. thread ∈ [0, size()) indexes per-thread scratch. The first exception is rethrown.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  void worker(int index);
  void run_tasks(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  int pending_ = 0;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
};

int default_thread_count();

}  // namespace kpig
