#include "command_help.h"

namespace mq::cli {
namespace {

constexpr char kModelsHelp[] = R"(usage: mqctl [global options] models <upload|list|get|download|delete> ...

Model checkpoints in the server's registry: a name with numbered versions, each a set of files
(config.json, weights, tokenizer) stored by SHA-256.

  models upload DIR --name NAME [--version N] [--new-version] [--description D] [--label K=V]...
                [--resume UPLOAD_ID]
      Uploads every file under DIR as a new version of NAME. Files the server already holds (same
      SHA-256) are not sent again. Content identical to the latest version returns that version
      instead of making a new one, unless --new-version (or an explicit --version N) asks for one.
      An interrupted upload prints its UPLOAD_ID; --resume UPLOAD_ID sends only what is missing.
  models list [--name NAME] [--limit N] [--page-token T]
      Versions, newest first (--limit 1..1000, default 100; --page-token continues a listing).
  models get NAME[:VERSION]
      One version (default: the latest) with its files, sizes and digests.
  models download NAME[:VERSION] --out DIR
      Writes the version's files under DIR. Files already there with the right SHA-256 are skipped.
  models delete NAME:VERSION
      Removes one version (the version is required); blobs no other version uses are deleted.

Also --json (one JSON object per line) and the global options of "mqctl --help".
)";

constexpr char kDatasetsHelp[] = R"(usage: mqctl [global options] datasets <upload|list|get|download|delete> ...

Datasets in the server's registry (calibration and evaluation texts): like models, but one file.

  datasets upload FILE --name NAME [--version N] [--new-version] [--description D] [--label K=V]...
                  [--resume UPLOAD_ID]
  datasets list [--name NAME] [--limit N] [--page-token T]
  datasets get NAME[:VERSION]
  datasets download NAME[:VERSION] --out DIR
  datasets delete NAME:VERSION

The options mean what they mean for models ("mqctl models --help"): identical content returns the
latest version unless --new-version; downloads skip files already present with the right digest.
)";

constexpr char kJobsHelp[] = R"(usage: mqctl [global options] jobs <submit|get|list|cancel|watch> ...

Quantization jobs: the server queues them and a worker runs them; the result is a new model.

  jobs submit --model REF --calib DATASET [options] [--wait]
      --model NAME[:VERSION]     model to quantize (default: its latest version)
      --calib DATASET[:VERSION]  calibration text
      --preset P                 rtn | smoothquant | quarot | mambaquant (default mambaquant)
      --bits B                   w8a8 | w4a8 (default w8a8)
      --scope S                  linear | full (default linear)
      --act A                    activation scales: per_token | per_tensor (default per_token)
      --samples N                calibration samples (1..65536, default 128)
      --seq-len L                tokens per sample (1..65536, default 256)
      --seed S                   sampling seed (default 0)
      --eval DATASET             evaluation text: perplexity before and after, in the job's report
      --eval-window W            evaluation window, tokens (1..65536, default 256)
      --output-name NAME         name of the resulting model (default: derived from model, preset, bits)
      --backend cpu|cuda         run only on a worker of this backend
      --disable PART             turn off one part of mambaquant (repeatable): klt_r1 | klt_r5 |
                                 online_r2 | smooth_s2 | smooth_s4
      --act-percentile P         activation clipping percentile
      --smooth-alpha A           smoothing migration strength α, in [0.05, 0.95] (default 0.5)
      --quantize-lm-head         quantize the output head too
      --r1-covariance C          all_layers | layer0
      --weight-clip W            auto | max | mse
      --state-granularity G      per_step_channel | per_step
      --tolerable-loss PCT       accuracy-driven: from the cheapest inference-cost tier that has one, keep
                                 the lowest-loss configuration whose perplexity on held-out calibration
                                 text is within PCT % of float; a w4a8 job no all-4-bit configuration
                                 satisfies then keeps the fewest most sensitive layers at 8-bit weights
                                 (report: "tuning")
      --w8-layers L,L,...        w4a8 mixed precision: these layers keep 8-bit weights (not with
                                 --tolerable-loss, which chooses them)
      --wait                     follow the job to its end; exit 3 if it ends FAILED or CANCELLED
  jobs get JOB_ID                state, stage, progress, attempts, result and report
  jobs list [--state S[,S...]] [--model NAME] [--limit N] [--page-token T]
      --state takes queued, assigned, running, succeeded, failed, cancelled
  jobs cancel JOB_ID             asks the worker to stop it (a queued job is cancelled at once)
  jobs watch JOB_ID              streams progress until the job ends (reconnects across server restarts)

Also --json (one JSON object per line) and the global options of "mqctl --help".
)";

constexpr char kWorkersHelp[] = R"(usage: mqctl [global options] workers list

  workers list
      The registered workers: id, name, the device each computes on (cpu or cuda, as its
      inference stream reports it) and the device's name, memory, state slots, lease (time since
      the last heartbeat) and loaded models with their running/waiting calls. --json prints every
      field.

Also the global options of "mqctl --help".
)";

constexpr char kServerHelp[] = R"(usage: mqctl [global options] server status

  server status
      The server's version and uptime, how many workers are registered and how many serve
      inference, and the models loaded on them. --json prints every field.

Also the global options of "mqctl --help".
)";

constexpr char kTokensHelp[] = R"(usage: mqctl tokens mint --role admin|operator|inference|worker [--name N] [--json]

  tokens mint --role R [--name N]
      Makes a new bearer token with role R on this machine (no server is called) and prints it
      once, with the line that grants it in the server's --tokens-file (only the token's digest
      is in that line). Add the line to the file and send the server SIGHUP; give the token to
      its holder (MQ_TOKEN or --token-file). --name labels the line (default: ROLE-<8 characters
      of the token>). See docs/security.md.
)";

}  // namespace

const char* CommandHelp(absl::string_view command) {
  if (command == "models") return kModelsHelp;
  if (command == "datasets") return kDatasetsHelp;
  if (command == "jobs") return kJobsHelp;
  if (command == "workers") return kWorkersHelp;
  if (command == "server") return kServerHelp;
  if (command == "tokens") return kTokensHelp;
  return nullptr;
}

}  // namespace mq::cli
