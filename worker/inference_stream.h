// The worker's end of WorkerService.Serve: one long-lived stream to the server that carries
// inference calls, cancellations and model commands down, and token events and load reports up.
// The worker dials out (pull design); the stream is reopened after any break, with the worker's
// current id (a worker that lost its lease registers again under a new id).
//
// Threads: a reader (the stream's Read loop and dispatch), a writer (drains the outbound queue, so
// the serving loops never block on the network, and sends a load report every two seconds). A
// call's events are queued by its model's serving loop.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mambaquant/v1/worker.grpc.pb.h"
#include "model_host.h"
#include "server_connection.h"

namespace mq::worker {

class InferenceStream {
 public:
  // worker_id: the id the worker is registered under now (empty: not registered yet).
  // preload: models to load before serving (--preload); on_fatal runs once when the worker cannot
  // serve as configured (a preload model unknown or not fitting): the process should exit.
  InferenceStream(const ServerConnection* server, ModelHost* host, mambaquant::v1::WorkerCapacity capacity,
                  std::function<std::string()> worker_id, std::vector<std::string> preload = {},
                  std::function<void(const std::string&)> on_fatal = nullptr);
  ~InferenceStream();  // Stop()

  void Start();
  // Shutdown, first half: tells the server this worker is draining (no new calls are routed to
  // it) and waits until the calls in flight have ended or `deadline` passes. Returns how many were
  // still running then (Stop cancels them). When none is left it then closes the stream the
  // orderly way (WritesDone, and waits for the server's end of it, within the same deadline): a
  // write that succeeded is only in gRPC's buffer, and cancelling the stream at once could drop the
  // last tokens of a call that finished here (the server would fail that call as lost).
  size_t Drain(std::chrono::steady_clock::time_point deadline);
  // Closes the stream, cancels the calls in flight and shuts the ModelHost down (its engines call
  // this stream's sinks, so they must stop first).
  void Stop();
  bool connected() const;

 private:
  struct LocalCall {
    std::string model;
    std::weak_ptr<serve::ServingEngine> engine;  // set once submitted (text models)
    std::weak_ptr<ClassifierRunner> classifier;  // set once submitted (Vim models)
    bool cancelled = false;
  };
  using Stream = grpc::ClientReaderWriter<mambaquant::v1::ServeUp, mambaquant::v1::ServeDown>;

  void Run();                       // connect, serve, reconnect until stopped
  void Serve(const std::string& worker_id);
  void Dispatch(const mambaquant::v1::ServeDown& down);
  void StartCall(const mambaquant::v1::InferenceCall& call);
  void Submit(const mambaquant::v1::InferenceCall& call, std::shared_ptr<serve::ServingEngine> engine);
  void SubmitClassify(const mambaquant::v1::InferenceCall& call, const std::shared_ptr<ClassifierRunner>& classifier);
  void RunModelCommand(const mambaquant::v1::ModelCommand& cmd);
  void CancelCall(const std::string& call_id);
  void CancelAll();
  // Queues a message for the writer; dropped when no stream is open.
  void Send(mambaquant::v1::ServeUp up);
  void SendError(const std::string& call_id, const absl::Status& status);
  void EndCall(const std::string& call_id);
  mambaquant::v1::WorkerLoad CurrentLoad();  // the host's snapshot with this stream's draining flag
  void WriterLoop(Stream* stream, grpc::ClientContext* ctx, const std::string& worker_id);

  const ServerConnection* server_;
  ModelHost* host_;
  const mambaquant::v1::WorkerCapacity capacity_;
  std::function<std::string()> worker_id_;
  const std::vector<std::string> preload_;
  std::function<void(const std::string&)> on_fatal_;

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  bool stopping_ = false;
  bool draining_ = false;                   // reported with every load report from Drain on
  bool open_ = false;                       // a stream is open and accepting writes
  bool closing_ = false;                    // drained: the writer half-closes once outbox_ is empty; no reconnect
  std::deque<mambaquant::v1::ServeUp> outbox_;
  bool writing_batch_ = false;              // the writer holds messages taken from outbox_ not yet written
  bool load_changed_ = false;
  grpc::ClientContext* ctx_ = nullptr;      // the open stream's context, to cancel it
  std::map<std::string, LocalCall> calls_;  // calls in flight, by call id
  std::thread thread_;
};

}  // namespace mq::worker
