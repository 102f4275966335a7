// LoRA adapter files in PEFT's format: adapter_model.safetensors with keys
// base_model.model.<HF module>.lora_{A,B}.weight (A [r, in], B [out, r], f32) and
// adapter_config.json; adapters on declared sites (LoraOptions::sites) keep strata's
// keys <unit>.<site>.lora_{A,B}.weight and list the sites in strata_sites. Invariant: load checks the config, every key and every shape
// before it writes any adapter value, so a failed load leaves the adapters as they were.
#include <filesystem>
#include <sstream>

#include "../model/lora_impl.h"
#include "file_io.h"
#include "json.h"
#include "strata/error.h"

namespace strata {

namespace {
namespace fs = std::filesystem;

std::string number(double x) {
  std::ostringstream o;
  o.precision(7);  // a float's digits: 0.05, not 0.0500000007
  o << x;
  std::string s = o.str();
  return s;
}

// The rows of B that go to the file, as stored in strata: [save_begin, save_end).
int64_t saved_rows(const LoraAdapter& a) { return a.save_end - a.save_begin; }
}  // namespace

LoraOptions read_lora_options(const std::string& dir) {
  const std::string cfg_path = dir + "/adapter_config.json";
  const json::Value cfg = json::parse(io::read_file(cfg_path), cfg_path);
  LoraOptions o;
  o.rank = cfg.at("r", cfg_path).as_int(cfg_path + ": r");
  o.alpha = float(cfg.at("lora_alpha", cfg_path).as_double(cfg_path + ": lora_alpha"));
  if (const json::Value* d = cfg.find("lora_dropout")) o.dropout = float(d->as_double(cfg_path + ": lora_dropout"));
  if (const json::Value* sites = cfg.find("strata_sites")) {  // declared sites (LoraOptions::sites)
    for (const json::Value& v : sites->items(cfg_path + ": strata_sites"))
      o.sites.push_back(v.as_string(cfg_path + ": strata_sites"));
    return o;
  }
  if (const json::Value* t = cfg.find("strata_targets")) {
    o.targets = lora_targets_from_string(t->as_string(cfg_path + ": strata_targets"));
    return o;
  }
  // A PEFT file: the widest family its modules name (GPT-2's c_proj is in both
  // attention and MLP; load() then checks every key).
  bool mlp = false, attention = false;
  for (const json::Value& v : cfg.at("target_modules", cfg_path).items(cfg_path + ": target_modules")) {
    const std::string& name = v.as_string(cfg_path + ": target_modules");
    for (const char* m : {"c_fc", "gate_proj", "up_proj", "down_proj"}) mlp = mlp || name == m;
    for (const char* a : {"c_proj", "attn.c_proj", "k_proj", "o_proj"}) attention = attention || name == a;
  }
  o.targets = mlp ? LoraTargets::all_linear : attention ? LoraTargets::attention : LoraTargets::query_value;
  return o;
}

void Lora::save(const std::string& dir, const std::string& base_name) const {
  const Impl& m = *impl_;
  const int64_t r = m.options.rank;
  fs::create_directories(dir);
  // The f32 truth: the master in bf16/fp16, the parameters in fp32.
  const TensorView truth = m.master.data() ? m.flat(m.master, DType::f32) : m.flat(m.params, DType::f32);
  std::vector<float> host = copy_to_host_f32(truth);
  std::vector<NamedTensor> out;
  for (const LoraAdapter& a : m.adapters) {
    const LoraTensor& ta = m.tensors[size_t(a.a_tensor)];
    const LoraTensor& tb = m.tensors[size_t(a.b_tensor)];
    out.push_back({ta.key, TensorView(host.data() + ta.offset, DType::f32, {r, a.in})});
    out.push_back({tb.key, TensorView(host.data() + tb.offset + a.save_begin * r, DType::f32, {saved_rows(a), r})});
  }
  save_safetensors(dir + "/adapter_model.safetensors", out, {{"format", "pt"}});

  std::string modules;
  for (const std::string& t : m.target_modules()) modules += (modules.empty() ? "" : ", ") + json::quote(t);
  std::ostringstream c;
  c << "{\n"
    << "  \"peft_type\": \"LORA\",\n"
    << "  \"task_type\": \"CAUSAL_LM\",\n"
    << "  \"base_model_name_or_path\": " << json::quote(base_name) << ",\n"
    << "  \"r\": " << r << ",\n"
    << "  \"lora_alpha\": " << number(m.options.alpha) << ",\n"
    << "  \"lora_dropout\": " << number(m.options.dropout) << ",\n"
    << "  \"target_modules\": [" << modules << "],\n"
    << "  \"fan_in_fan_out\": " << (m.layout == HfLayout::gpt2 ? "true" : "false") << ",\n"
    << "  \"bias\": \"none\",\n"
    << "  \"init_lora_weights\": true,\n"
    << "  \"inference_mode\": true,\n"
    << "  \"use_rslora\": false,\n"
    << "  \"use_dora\": false,\n"
    << "  \"modules_to_save\": null,\n"
    << "  \"strata_targets\": " << json::quote(lora_targets_name(m.options.targets));
  if (!m.options.sites.empty()) c << ",\n  \"strata_sites\": [" << modules << "]";  // not PEFT's names
  c << "\n}\n";
  io::write_file_synced(dir + "/adapter_config.json", c.str());
}

void Lora::load(const std::string& dir) {
  Impl& m = *impl_;
  STRATA_CHECK(!m.merged, "Lora::load: the adapters are merged; unmerge() first");
  const int64_t r = m.options.rank;
  const std::string cfg_path = dir + "/adapter_config.json";
  const json::Value cfg = json::parse(io::read_file(cfg_path), cfg_path);
  const int64_t file_r = cfg.at("r", cfg_path).as_int(cfg_path + ": r");
  const double file_alpha = cfg.at("lora_alpha", cfg_path).as_double(cfg_path + ": lora_alpha");
  STRATA_CHECK(file_r == r, "Lora::load: " << cfg_path << " has r = " << file_r << ", these adapters have rank " << r);
  STRATA_CHECK(std::abs(file_alpha - m.options.alpha) <= 1e-6 * std::abs(file_alpha),
               "Lora::load: " << cfg_path << " has lora_alpha = " << file_alpha << ", these adapters have alpha "
                              << m.options.alpha);

  const std::string path = dir + "/adapter_model.safetensors";
  SafetensorsReader file(path);
  for (const LoraAdapter& a : m.adapters) {
    const LoraTensor& ta = m.tensors[size_t(a.a_tensor)];
    const LoraTensor& tb = m.tensors[size_t(a.b_tensor)];
    const std::vector<int64_t> want_a{r, a.in}, want_b{saved_rows(a), r};
    STRATA_CHECK(file.find(ta.key), "Lora::load: " << path << " has no tensor " << ta.key
                                                   << " (were the adapters saved for other targets?)");
    STRATA_CHECK(file.find(tb.key), "Lora::load: " << path << " has no tensor " << tb.key);
    STRATA_CHECK(file.entry(ta.key).shape == want_a, "Lora::load: " << ta.key << " in " << path
                                                                      << " has the wrong shape; expected [" << r
                                                                      << ", " << a.in << "]");
    STRATA_CHECK(file.entry(tb.key).shape == want_b, "Lora::load: " << tb.key << " in " << path
                                                                      << " has the wrong shape; expected ["
                                                                      << saved_rows(a) << ", " << r << "]");
  }
  std::vector<float> host(size_t(m.numel), 0.0f);
  for (const LoraAdapter& a : m.adapters) {
    const LoraTensor& ta = m.tensors[size_t(a.a_tensor)];
    const LoraTensor& tb = m.tensors[size_t(a.b_tensor)];
    std::vector<float> A = file.read_f32(ta.key), B = file.read_f32(tb.key);
    std::copy(A.begin(), A.end(), host.begin() + ta.offset);
    // Rows outside a live range (GPT-2 c_attn's k when only q and v are trained) are
    // loaded as they are: they act in the forward but their gradient stays zero.
    std::copy(B.begin(), B.end(), host.begin() + tb.offset + a.save_begin * r);
  }
  Device& dev = m.model->device();
  copy_from_host_f32(m.flat(m.params, m.dtype), host.data());
  if (m.master.data()) copy_from_host_f32(m.flat(m.master, DType::f32), host.data());
  ops::fill_zero(m.flat(m.m, DType::f32), dev.stream());
  ops::fill_zero(m.flat(m.v, DType::f32), dev.stream());
  dev.stream().synchronize();
}

}  // namespace strata
