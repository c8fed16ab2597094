//! An ONNX graph under construction, which each layer's `onnx` method (its inference
//! twin of `forward`) writes into: typed helpers for the standard operators, each
//! recording the opset it requires, on the protobuf types of `tract-onnx`
//! (prost-generated from onnx.proto). `export/` walks a model through it.

use candle_core::{DType, Result, Tensor};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A tensor in the graph, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// One axis of a graph input or output: the dynamic axes carry Optimum's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Batch,
    Sequence,
    Fixed(usize),
}

impl Axis {
    fn dimension(self) -> Dimension {
        let value = match self {
            Axis::Batch => dimension::Value::DimParam("batch_size".into()),
            Axis::Sequence => dimension::Value::DimParam("sequence_length".into()),
            Axis::Fixed(n) => dimension::Value::DimValue(n as i64),
        };
        Dimension {
            value: Some(value),
            ..Default::default()
        }
    }
}

/// The element types hone's graphs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F16,
    I64,
}

impl ElemType {
    fn proto(self) -> i32 {
        (match self {
            ElemType::F32 => DataType::Float,
            ElemType::F16 => DataType::Float16,
            ElemType::I64 => DataType::Int64,
        }) as i32
    }
}

/// The token inputs a model can take, in Optimum's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenInput {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl TokenInput {
    pub fn name(self) -> &'static str {
        match self {
            TokenInput::InputIds => "input_ids",
            TokenInput::AttentionMask => "attention_mask",
            TokenInput::TokenTypeIds => "token_type_ids",
        }
    }
}

/// The lowest opset hone writes: LayerNormalization entered the standard in opset 17.
pub const MIN_OPSET: u32 = 17;
/// The highest opset hone writes (ONNX Runtime 1.20 and tract 0.23 read it).
pub const MAX_OPSET: u32 = 21;

/// A graph being built. Layers add their nodes through the helpers (`matmul`, `add`,
/// `layer_norm`, ...), which keep the highest opset any node needs.
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<(TokenInput, ValueInfoProto)>,
    outputs: Vec<ValueInfoProto>,
    names: usize,
    /// The highest opset a node needs, and that node's operator.
    needs: (u32, &'static str),
    /// The type weights are stored and computed in.
    float: ElemType,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: ElemType, axes: &[Axis]) -> ValueInfoProto {
    let tensor = type_proto::Tensor {
        elem_type: elem.proto(),
        shape: Some(TensorShapeProto {
            dim: axes.iter().map(|a| a.dimension()).collect(),
        }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph {
    /// An empty graph whose weights and activations are `float` (F32 or F16).
    pub fn new(float: ElemType) -> Self {
        Self {
            nodes: vec![],
            initializers: vec![],
            inputs: vec![],
            outputs: vec![],
            names: 0,
            needs: (0, ""),
            float,
        }
    }

    /// The type weights and activations are in.
    pub fn float_type(&self) -> ElemType {
        self.float
    }

    /// The opset the graph's nodes need, and the operator that needs it.
    pub fn required_opset(&self) -> (u32, &'static str) {
        self.needs
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("/{hint}_{}", self.names)
    }

    /// Adds a node of `op` (standard domain, at least `opset`) with one output.
    fn node(
        &mut self,
        op: &'static str,
        opset: u32,
        inputs: &[&Value],
        attribute: Vec<AttributeProto>,
    ) -> Value {
        if opset > self.needs.0 {
            self.needs = (opset, op);
        }
        let out = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|v| v.0.clone()).collect(),
            output: vec![out.clone()],
            name: format!("{out}_node"),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        Value(out)
    }

    /// A token input `[batch, sequence]` (int64), declared on first use.
    pub fn token_input(&mut self, input: TokenInput) -> Value {
        if !self.inputs.iter().any(|(i, _)| *i == input) {
            let info = value_info(input.name(), ElemType::I64, &[Axis::Batch, Axis::Sequence]);
            self.inputs.push((input, info));
            self.inputs.sort_by_key(|(i, _)| *i);
        }
        Value(input.name().into())
    }

    /// Declares `value` a graph output named `name` with `axes`.
    pub fn output(&mut self, name: &str, value: &Value, axes: &[Axis]) {
        self.nodes.push(NodeProto {
            input: vec![value.0.clone()],
            output: vec![name.into()],
            name: format!("/{name}_identity"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        self.outputs.push(value_info(name, self.float, axes));
    }

    /// A weight, stored in the graph's float type.
    pub fn weight(&mut self, hint: &str, t: &Tensor) -> Result<Value> {
        let name = self.fresh(hint);
        let dims = t.dims().iter().map(|&d| d as i64).collect();
        let raw_data = match self.float {
            ElemType::F16 => {
                let v = t
                    .to_dtype(DType::F16)?
                    .flatten_all()?
                    .to_vec1::<half::f16>()?;
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            _ => {
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        };
        self.initializers.push(TensorProto {
            dims,
            data_type: self.float.proto(),
            name: name.clone(),
            raw_data,
            ..Default::default()
        });
        Ok(Value(name))
    }

    /// A float constant (scalar when `dims` is empty), in the graph's float type.
    pub fn constant(&mut self, values: &[f32], dims: &[usize]) -> Result<Value> {
        let t = Tensor::from_slice(values, dims, &candle_core::Device::Cpu)?;
        self.weight("const", &t)
    }

    /// An int64 constant (shapes, axes, indices).
    pub fn ints(&mut self, values: &[i64]) -> Value {
        let name = self.fresh("ints");
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        Value(name)
    }

    /// A scalar int64 constant.
    pub fn int(&mut self, value: i64) -> Value {
        let name = self.fresh("int");
        self.initializers.push(TensorProto {
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            int64_data: vec![value],
            ..Default::default()
        });
        Value(name)
    }

    pub fn matmul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("MatMul", 13, &[a, b], vec![])
    }
    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Add", 14, &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Sub", 14, &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Mul", 14, &[a, b], vec![])
    }
    pub fn div(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Div", 14, &[a, b], vec![])
    }
    pub fn pow(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Pow", 15, &[a, b], vec![])
    }
    pub fn erf(&mut self, x: &Value) -> Value {
        self.node("Erf", 13, &[x], vec![])
    }
    pub fn tanh(&mut self, x: &Value) -> Value {
        self.node("Tanh", 13, &[x], vec![])
    }
    pub fn sigmoid(&mut self, x: &Value) -> Value {
        self.node("Sigmoid", 13, &[x], vec![])
    }
    pub fn relu(&mut self, x: &Value) -> Value {
        self.node("Relu", 14, &[x], vec![])
    }
    /// Softmax over `axis` alone (opset 13's semantics).
    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.node("Softmax", 13, &[x], vec![attr_int("axis", axis)])
    }
    /// LayerNormalization over the last axis.
    pub fn layer_norm(&mut self, x: &Value, scale: &Value, bias: &Value, eps: f64) -> Value {
        let attrs = vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)];
        self.node("LayerNormalization", 17, &[x, scale, bias], attrs)
    }
    /// `data` indexed by `indices` along `axis`.
    pub fn gather(&mut self, data: &Value, indices: &Value, axis: i64) -> Value {
        self.node("Gather", 13, &[data, indices], vec![attr_int("axis", axis)])
    }
    /// Reshape to `shape` (0 copies the input's axis, -1 is inferred).
    pub fn reshape(&mut self, x: &Value, shape: &[i64]) -> Value {
        let shape = self.ints(shape);
        self.node("Reshape", 14, &[x, &shape], vec![])
    }
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        self.node("Transpose", 13, &[x], vec![attr_ints("perm", perm)])
    }
    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let axes = self.ints(axes);
        self.node("Unsqueeze", 13, &[x, &axes], vec![])
    }
    /// The shape of `x` (int64 `[rank]`).
    pub fn shape(&mut self, x: &Value) -> Value {
        self.node("Shape", 15, &[x], vec![])
    }
    /// `[start, limit)` by `delta` (scalars of one type).
    pub fn range(&mut self, start: &Value, limit: &Value, delta: &Value) -> Value {
        self.node("Range", 11, &[start, limit, delta], vec![])
    }
    /// `x` converted to the graph's float type.
    pub fn cast_float(&mut self, x: &Value) -> Value {
        let to = self.float.proto() as i64;
        self.node("Cast", 13, &[x], vec![attr_int("to", to)])
    }
    /// `x` converted to int64.
    pub fn cast_int(&mut self, x: &Value) -> Value {
        let to = ElemType::I64.proto() as i64;
        self.node("Cast", 13, &[x], vec![attr_int("to", to)])
    }
    pub fn greater(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Greater", 13, &[a, b], vec![])
    }
    pub fn equal(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Equal", 13, &[a, b], vec![])
    }
    pub fn not(&mut self, x: &Value) -> Value {
        self.node("Not", 1, &[x], vec![])
    }
    /// `a` where `cond`, else `b`.
    pub fn where_(&mut self, cond: &Value, a: &Value, b: &Value) -> Value {
        self.node("Where", 16, &[cond, a, b], vec![])
    }
    /// Maximum of `x` over `axis`, the axis dropped.
    pub fn reduce_max(&mut self, x: &Value, axis: i64) -> Value {
        let attrs = vec![attr_ints("axes", &[axis]), attr_int("keepdims", 0)];
        self.node("ReduceMax", 13, &[x], attrs)
    }
    /// `x` sliced to `[starts, ends)` on `axes`; the bounds are int64 `[len(axes)]`.
    pub fn slice(&mut self, x: &Value, starts: &Value, ends: &Value, axes: &[i64]) -> Value {
        let axes = self.ints(axes);
        self.node("Slice", 13, &[x, starts, ends, &axes], vec![])
    }

    /// The finished model at `opset`.
    pub fn into_model(self, opset: u32, doc: String) -> ModelProto {
        // IR 8 came with opset 17, 9 with 19, 10 with 21.
        let ir_version = match opset {
            ..=18 => 8,
            19 | 20 => 9,
            _ => 10,
        };
        let graph = GraphProto {
            node: self.nodes,
            name: "hone".into(),
            initializer: self.initializers,
            input: self.inputs.into_iter().map(|(_, v)| v).collect(),
            output: self.outputs,
            ..Default::default()
        };
        ModelProto {
            ir_version,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset as i64,
            }],
            producer_name: "hone".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc,
            graph: Some(graph),
            ..Default::default()
        }
    }
}
